//! The MCP message model: JSON-RPC parsing with limits, the context and
//! vocabulary every layer shares about a message ([`context`]), the Streamable HTTP
//! header rules of both protocol eras, the SSE codec, and the one function that
//! turns Portcullis errors into JSON-RPC error responses.

pub mod context;
pub mod era;
pub mod error;
pub mod jsonrpc;
pub mod keys;
pub mod params;
pub mod sse;

pub use context::{Direction, Kind, MessageContext, Mode, Outcome, StepDecision};
pub use era::{Era, check_standard_headers};
pub use error::{McpError, error_response};
pub use jsonrpc::{Message, ParseError, ParseOptions, check_depth};
