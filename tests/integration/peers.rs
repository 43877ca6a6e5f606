//! Real MCP peers (installed by `.ci/install-peers`).
