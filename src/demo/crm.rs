//! The demo server's business: a small CRM's tools, customers and ticket
//! threads, and what each tool answers. No HTTP here: the server in
//! [`super`] reads requests and calls [`call_tool`].

use serde_json::{Value, json};

use super::MAX_REPORT_STEPS;
use crate::secret;

pub(super) fn tools() -> Value {
    json!([
        {
            "name": "lookup_customer",
            "title": "Look up a customer",
            "description": "Returns a customer's record, including contact and payment details.",
            "inputSchema": {
                "type": "object",
                "properties": { "customer_id": { "type": "string", "description": "Customer id, e.g. C-1001" } },
                "required": ["customer_id"],
                "additionalProperties": false
            },
            "outputSchema": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"}, "email": {"type": "string"},
                    "phone": {"type": "string"}, "card_number": {"type": "string"}, "iban": {"type": "string"},
                    "tier": {"type": "string"}
                },
                "required": ["id", "name"]
            },
            "annotations": { "readOnlyHint": true }
        },
        {
            "name": "issue_refund",
            "title": "Issue a refund",
            "description": "Refunds an amount (in EUR) to a customer's card.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "customer_id": { "type": "string" },
                    "amount": { "type": "number", "exclusiveMinimum": 0 },
                    "reason": { "type": "string" }
                },
                "required": ["customer_id", "amount"],
                "additionalProperties": false
            },
            "annotations": { "destructiveHint": true }
        },
        {
            "name": "search_tickets",
            "title": "Search support tickets",
            "description": "Full-text search over open support tickets.",
            "inputSchema": {
                "type": "object",
                "properties": { "query": { "type": "string" } },
                "required": ["query"]
            },
            "annotations": { "readOnlyHint": true }
        },
        {
            "name": "delete_customer",
            "title": "Delete a customer",
            "description": "Erases a customer record (GDPR erasure request).",
            "inputSchema": {
                "type": "object",
                "properties": { "customer_id": { "type": "string" } },
                "required": ["customer_id"]
            },
            "annotations": { "destructiveHint": true }
        },
        {
            "name": "get_ticket_thread",
            "title": "Read a ticket's conversation",
            "description": "The full message thread of a support ticket (about 4 KiB).",
            "inputSchema": {
                "type": "object",
                "properties": { "ticket_id": { "type": "string" } },
                "required": ["ticket_id"]
            },
            "annotations": { "readOnlyHint": true }
        },
        {
            "name": "generate_report",
            "title": "Generate a report",
            "description": "Builds a revenue report in steps, sending progress notifications.",
            "inputSchema": {
                "type": "object",
                "properties": { "steps": { "type": "integer", "minimum": 1, "maximum": MAX_REPORT_STEPS } }
            }
        }
    ])
}

fn customer(id: &str) -> Option<Value> {
    let (name, email, phone, card, iban, tier) = match id {
        "C-1001" => (
            "Ada Lovelace",
            "ada.lovelace@example.com",
            "+44 20 7946 0018",
            "4111 1111 1111 1111",
            "GB82 WEST 1234 5698 7654 32",
            "gold",
        ),
        "C-1002" => (
            "Grace Hopper",
            "grace@example.org",
            "+1 202 555 0143",
            "5500 0000 0000 0004",
            "DE89 3704 0044 0532 0130 00",
            "silver",
        ),
        "C-1003" => (
            "Alan Turing",
            "alan.turing@example.net",
            "+44 161 496 0734",
            "3400 0000 0000 009",
            "FR14 2004 1010 0505 0001 3M02 606",
            "bronze",
        ),
        _ => return None,
    };
    Some(
        json!({ "id": id, "name": name, "email": email, "phone": phone,
                 "card_number": card, "iban": iban, "tier": tier }),
    )
}

/// A support conversation of about 4 KiB: ordinary prose with the few
/// personal details real tickets carry (an e-mail address, a phone number,
/// the last digits of a card), the shape a redaction policy meets all day.
pub fn ticket_thread(id: &str) -> String {
    let turns = [
        (
            "customer",
            "Hello, I was charged twice for order 7731 last Tuesday. The second charge appeared on my statement two days later and has not been reversed yet. Could you please look into it? You can reach me at grace@example.org or on +1 202 555 0143 during office hours.",
        ),
        (
            "agent",
            "Thank you for reaching out, and sorry for the trouble. I can see two authorisations for order 7731. The first one was captured; the second one should have been released automatically after the payment provider's timeout. I have opened an investigation with our payments team and will update this ticket as soon as I hear back.",
        ),
        (
            "customer",
            "Thanks. For reference, the card ends in 0004 and the amount was 149.90 EUR both times. My bank says they cannot do anything until the merchant confirms the duplicate.",
        ),
        (
            "agent",
            "Understood. The payments team confirmed the duplicate capture. A refund of 149.90 EUR has been issued and should be visible within five to seven business days, depending on your bank. I have also added a note to your account so that this does not happen again with the saved payment method.",
        ),
        (
            "customer",
            "I still do not see the refund after a week. Is there a reference number I can give to my bank?",
        ),
        (
            "agent",
            "Of course. The refund reference is R-7731-02 and it was sent on the original payment rail. Banks sometimes show refunds as a separate credit rather than reversing the charge, so it may appear under a different description. If it has not arrived by Friday, reply here and I will escalate it to our finance team.",
        ),
    ];
    let mut out = format!("Ticket {id}: Card charged twice for order 7731\n\n");
    for (n, (who, text)) in turns.iter().cycle().enumerate() {
        if out.len() >= 4096 {
            break;
        }
        out.push_str(&format!("[{}] {who}: {text}\n\n", n + 1));
    }
    out.truncate(out.char_indices().nth(4096).map_or(out.len(), |(i, _)| i));
    out
}

fn text_result(text: String, structured: Option<Value>, is_error: bool) -> Value {
    let mut r = json!({ "content": [{ "type": "text", "text": text }], "isError": is_error });
    if let (Some(s), Some(obj)) = (structured, r.as_object_mut()) {
        obj.insert("structuredContent".into(), s);
    }
    r
}

fn arg_str<'a>(args: &'a Value, key: &str) -> Option<&'a str> {
    args.get(key).and_then(Value::as_str)
}

/// Runs a tool. `Err` is a protocol error (unknown tool, bad arguments).
pub(super) fn call_tool(name: &str, args: &Value) -> Result<Value, (i64, String)> {
    let bad = |m: &str| (-32602, m.to_owned());
    match name {
        "lookup_customer" => {
            let id = arg_str(args, "customer_id").ok_or_else(|| bad("customer_id is required"))?;
            Ok(match customer(id) {
                Some(c) => text_result(c.to_string(), Some(c), false),
                None => text_result(format!("No customer with id {id}"), None, true),
            })
        }
        "issue_refund" => {
            let id = arg_str(args, "customer_id").ok_or_else(|| bad("customer_id is required"))?;
            let amount = args
                .get("amount")
                .and_then(Value::as_f64)
                .filter(|a| *a > 0.0)
                .ok_or_else(|| bad("amount must be a positive number"))?;
            if customer(id).is_none() {
                return Ok(text_result(format!("No customer with id {id}"), None, true));
            }
            let refund = json!({ "refund_id": format!("R-{}", &secret::random_id()[..8]),
                                 "customer_id": id, "amount": amount, "currency": "EUR", "status": "issued" });
            Ok(text_result(
                format!("Refunded {amount:.2} EUR to {id}"),
                Some(refund),
                false,
            ))
        }
        "search_tickets" => {
            let q = arg_str(args, "query")
                .ok_or_else(|| bad("query is required"))?
                .to_lowercase();
            let tickets = [
                ("T-501", "C-1001", "Card charged twice for order 7731"),
                (
                    "T-502",
                    "C-1002",
                    "Cannot reset password; contact grace@example.org",
                ),
                ("T-503", "C-1003", "Refund not received after 14 days"),
            ];
            let hits: Vec<Value> = tickets
                .iter()
                .filter(|(_, _, s)| q.is_empty() || s.to_lowercase().contains(&q))
                .map(|(id, c, s)| json!({ "id": id, "customer_id": c, "subject": s }))
                .collect();
            let text = serde_json::to_string(&hits).unwrap_or_default();
            Ok(text_result(text, Some(json!({ "tickets": hits })), false))
        }
        "get_ticket_thread" => {
            let id = arg_str(args, "ticket_id").ok_or_else(|| bad("ticket_id is required"))?;
            Ok(text_result(ticket_thread(id), None, false))
        }
        "delete_customer" => {
            let id = arg_str(args, "customer_id").ok_or_else(|| bad("customer_id is required"))?;
            Ok(text_result(
                format!("Customer {id} scheduled for erasure"),
                None,
                false,
            ))
        }
        "generate_report" => Ok(text_result(
            "Revenue report: Q3 EUR 1.2M, Q4 EUR 1.4M".into(),
            None,
            false,
        )),
        _ => Err((-32602, format!("Unknown tool: {name}"))),
    }
}
