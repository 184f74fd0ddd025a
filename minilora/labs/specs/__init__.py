"""The labs' specifications, one module per lab; minilora.labs.registry lists them in order."""
