"""Reading and writing files, each checked once at its door: checkpoints (byte-bounded reading and the checks of a
state dict against a network), images, videos, a command's output file, and the memory a run will need."""
