"""Generated from proto/gated/v1 by gated/rpc/codegen.py (`make proto`). Do not edit."""
