//! The MCP message model: JSON-RPC parsing with limits, the Streamable HTTP
//! header rules of both protocol eras, the SSE codec, and the one function that
//! turns Portcullis errors into JSON-RPC error responses.

pub mod era;
pub mod error;
pub mod jsonrpc;
pub mod keys;
pub mod params;
pub mod sse;

pub use era::{Era, check_standard_headers};
pub use error::{McpError, error_response};
pub use jsonrpc::{Kind, Message, ParseError, ParseOptions, check_depth};
