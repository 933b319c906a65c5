"""The API's operations: what differs between endpoints (base.Operation), one module each."""
