// Package outgoing sends mail through external SMTP servers: SMTP settings
// and their step-by-step check, the admin's system SMTP accounts, the CRM
// senders, the durable outbox with its workers, and the send log.
//
// It imports no sibling package. Where it must call up (for example to file
// a sent copy in a mailbox's Sent folder) it takes a hook from its caller.
//
// Invariants (as they land with the Outgoing issue):
//   - Settings that fail their check are never saved.
//   - A message is committed to the outbox before the submitter is told it
//     was accepted, and ends sent, failed or unknown: never lost.
//   - The account for a message is chosen strictly by its From address among
//     active accounts; there is no silent fallback.
package outgoing
