"""Redis Streams distribution: one process publishes, any number consume."""
