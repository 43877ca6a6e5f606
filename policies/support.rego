# Support-desk rules for the demo CRM, in Rego (builtin:rego). support.toml
# carries this module inline, as `policy`; a test keeps the two the same.
package portcullis

import rego.v1

default allow := false

support if "support" in input.principal.groups

# Support reads customers and tickets.
allow if {
	support
	input.tool in data.read_tools
}

# Refunds: listed for support, called up to the limit, or up to the higher
# limit with MFA in the token.
may_refund if {
	support
	input.tool == "issue_refund"
}

allow if {
	may_refund
	input.listing
}

allow if {
	may_refund
	input.arguments.amount > 0
	input.arguments.amount <= data.refund_limit
}

allow if {
	may_refund
	input.principal.claims.mfa == true
	input.arguments.amount > 0
	input.arguments.amount <= data.refund_limit_mfa
}

# Erasure is the DPO's, never an agent's, under any spelling of the name.
deny contains "customer erasure is never done by an agent" if portcullis.like(input.name, "delete_*")

annotations := {"desk": "support"} if support
