// Package testpeer holds the real and in-process peers that every suite of
// mailsync tests against: a certificate authority generated at test time, a
// scriptable SMTP server on go-smtp, an IMAP server on go-imap v2's
// imapmemserver, a real Dovecot started from a generated configuration, and a
// fresh PostgreSQL database per test package. A man in the middle (MITM)
// attacks the TLS between a client and any of those servers; CanaryPassword,
// SecretForms and CanaryHandler look for a secret where it must not show.
// StartHostile is a raw TCP server that runs a script per connection, for
// the hostile-server suites (IMAPCases, SMTPCases); Probe measures each call
// under attack: panics, goroutines left behind, heap growth.
//
// Invariants:
//   - Every peer listens on 127.0.0.1 with a port chosen by the kernel, and is
//     stopped by t.Cleanup: no test leaves a process or a listener behind.
//   - TLS is always verified against the generated CA; nothing here needs or
//     offers InsecureSkipVerify.
//   - A peer that is not installed makes the test skip with a line naming what
//     is missing, unless MAILSYNC_TEST_REQUIRE lists it (as CI does), in which
//     case the test fails instead.
package testpeer
