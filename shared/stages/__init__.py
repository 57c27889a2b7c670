"""One module per queue, named after it: what a message of that queue does. Stages use
services (shared/services) and never import one another."""
