"""Pure `transitions` state machines for the connection and the order lifecycle."""
