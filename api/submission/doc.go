// Package submission is mailsync's SMTP submission endpoint (RFC 6409) for
// sites that send through SMTP or a sendmail-like program rather than the
// JSON API: PHP's mail() through "mailsync sendmail", Django, Rails, cron,
// WordPress and Bitrix SMTP plugins.
//
// It is a go-smtp server over two small interfaces declared here: the
// outgoing service's SubmitRaw and the users store's token check. It
// imports outgoing for the Caller and message types only; nothing imports
// it but cmd/mailsync.
//
// Protocol: EHLO with PIPELINING, 8BITMIME, SMTPUTF8, SIZE (the outbox's
// limit), CHUNKING and ENHANCEDSTATUSCODES (RFC 2034); STARTTLS (RFC 3207)
// when a certificate is configured, and implicit TLS (RFC 8314) on a second
// listener; AUTH PLAIN (RFC 4616) and LOGIN with a user's API token as the
// password. The user name is not checked: only the token says who sends
// (the user's address is a good user name: it shows in the logs).
//
// Invariants:
//   - A message gets its 250 only once SubmitRaw committed it to the outbox:
//     a 250 survives a crash of the process right after the reply.
//   - A message is routed by its header From exactly as the API routes a
//     draft, with the authenticated user as the caller: the user must own or
//     share the sender, and the sender's name fills a From without one.
//   - Credentials never cross a network in clear text: AUTH is offered and
//     accepted only under TLS or from a loopback address.
//   - Without AUTH, a client may send only from a loopback address and only
//     when TrustLoopback is on (a single-host site), as Options.LoopbackUser.
//   - Replies: a refused sender is 550 5.7.1 naming the address; a message
//     over the limit 552 5.3.4; a malformed message 554 5.6.0 (a bad
//     recipient 553 5.1.3); anything else, such as the database being down,
//     451 4.3.0, so the client keeps the message and tries again.
//   - Shutdown stops accepting, answers 421 to new transactions and waits for
//     those in progress to get their reply before it closes connections.
package submission
