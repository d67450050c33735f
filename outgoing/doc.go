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
//
// The outbox's path for a message (handoff.go, worker.go): while this
// instance's Worker runs, a submitted message's row is committed already
// leased to it ("sending", no attempt counted yet) and the message goes to
// the worker in memory; otherwise, or when that queue is full, the row is
// "queued" and a worker claims it. Either way the 202 reports "queued".
// Bodies are stored S2-compressed when that saves an eighth (body.go). A
// lease that runs out turns a tried message into "unknown" (it may have
// been delivered; resent MaxUnknownRetries times) and an untried one back
// into "queued".
package outgoing
