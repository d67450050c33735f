package testpeer

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// HostileCase is one misbehaving server: a row of the hostile-server suite
// (docs/security.md, "Hostile servers"). The same case runs against every
// call site that speaks its protocol — the IMAP check and the sync for
// IMAP, the SMTP check and the outbox worker for SMTP — each with its own
// expected outcome; a nil Want means the site does not run the case (the
// behaviour is past where that site stops).
type HostileCase struct {
	Name     string
	Protocol string // "imap" or "smtp"
	// Security is how the client is told to connect: "ssl" (the peer
	// speaks TLS from the first byte), "starttls" or "none".
	Security string
	// Stalls marks a case that ends on a deadline: the sites use short
	// ones for it.
	Stalls bool
	// Heap marks a case about memory (huge announcements, endless
	// lines): its heap growth is reported in the figures.
	Heap bool
	// Script returns the script, with fresh state for one peer.
	Script func() HostileScript
	// Twice makes the sync run twice on one peer: the case is about
	// state carried from one sync to the next (Want is the second's).
	Twice bool
	// Worker makes the sync site run the engine's worker instead of one
	// pass, until the mailbox's state is error (the case is about IDLE).
	Worker bool
	// Clear makes the peer speak clear text whatever Security says (a
	// client told ssl meets a server that has no TLS).
	Clear bool

	Check *Want // IMAP: mailbox.IMAPNetwork.Check; SMTP: outgoing.Network.Check
	Sync  *Want // IMAP: imapsync.Engine.SyncOnce of INBOX
	Send  *Want // SMTP: the outbox worker sending one message
}

// Want is the outcome a site must see. Every text is matched as a
// substring, case-insensitively.
type Want struct {
	// Step is the step that must fail; "" means the call succeeds.
	Step string
	// Code is the check's explanation code of the failed step.
	Code string
	// Reply is text the server's reply in the failed step must hold; ""
	// checks nothing.
	Reply string
	// Err is text the error must hold: the sync's error, the outbox
	// message's last error, the check's explanation.
	Err string
	// Status is the outbox message's status after the attempt.
	Status string
	// Rows is how many messages the sync must have stored (-1: any).
	Rows int
}

// Start starts a peer for the case: implicit TLS for "ssl", TLS offered
// for STARTTLS upgrades for "starttls", clear text only for "none" or
// Clear.
func (hc HostileCase) Start(t testing.TB, ca *CA) *HostilePeer {
	t.Helper()
	opts := &HostileOptions{}
	switch {
	case hc.Clear:
	case hc.Security == "ssl":
		opts.TLS, opts.Implicit = ca.ServerTLS(t), true
	case hc.Security == "starttls":
		opts.TLS = ca.ServerTLS(t)
	}
	return StartHostile(t, opts, hc.Script())
}

// Matches reports whether text contains want, ignoring case; an empty
// want matches anything.
func Matches(text, want string) bool {
	return want == "" || strings.Contains(strings.ToLower(text), strings.ToLower(want))
}

// Literal sizes and floods of the memory cases.
const (
	hostileHugeLiteral = 2 << 30  // announced: 2 GiB
	hostileLongLine    = 10 << 20 // a 10 MB line
)

// imapScript builds the script of a HostileIMAP changed by edit.
func imapScript(edit func(h *HostileIMAP)) func() HostileScript {
	return func() HostileScript {
		h := &HostileIMAP{UIDValidity: 7, Messages: HostileMessages(3)}
		if edit != nil {
			edit(h)
		}
		return h.Serve
	}
}

// imapOn answers the command named name with f, the rest by default.
func imapOn(name string, f func(c *HostileConn, cmd IMAPCommand) error) func(h *HostileIMAP) {
	return func(h *HostileIMAP) {
		h.Handle = func(c *HostileConn, cmd IMAPCommand) (bool, error) {
			if cmd.Name != name {
				return false, nil
			}
			return true, f(c, cmd)
		}
	}
}

// errHangUp ends a script that closes the connection on purpose.
var errHangUp = errors.New("the script hung up")

// raw is a script that writes s and then holds the connection.
func raw(s string) func() HostileScript {
	return func() HostileScript {
		return func(c *HostileConn) error {
			if err := c.Write(s); err != nil {
				return err
			}
			return c.Hold()
		}
	}
}

// fetchFirst answers a body UID FETCH with the first message as it should
// be and then with what tail writes.
func fetchThen(tail func(c *HostileConn, h *HostileIMAP, cmd IMAPCommand) error) func(h *HostileIMAP) {
	return func(h *HostileIMAP) {
		h.Handle = func(c *HostileConn, cmd IMAPCommand) (bool, error) {
			if cmd.Name != "UID FETCH" || !strings.Contains(strings.ToUpper(cmd.Args), "BODY") {
				return false, nil
			}
			return true, tail(c, h, cmd)
		}
	}
}

// IMAPCases are the hostile IMAP servers.
func IMAPCases() []HostileCase {
	msg := HostileMessages(1)[0].Body
	anyRows := -1
	cases := []HostileCase{
		// The greeting.
		{
			Name: "greeting never sent", Security: "ssl", Stalls: true,
			Script: func() HostileScript { return (*HostileConn).Hold },
			Check:  &Want{Step: "greeting", Code: "timeout"},
			Sync:   &Want{Step: "greeting", Err: "timed out"},
		},
		{
			Name: "closed before the greeting", Security: "ssl",
			Script: func() HostileScript { return func(*HostileConn) error { return nil } },
			Check:  &Want{Step: "greeting", Code: "connection_closed"},
			Sync:   &Want{Step: "greeting", Err: "closed"},
		},
		{
			Name: "greeting garbage", Security: "ssl", Script: raw("HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n"),
			Check: &Want{Step: "greeting", Code: "protocol_error", Err: "HTTP/1.1 400"},
			Sync:  &Want{Step: "greeting", Err: "not an IMAP greeting"},
		},
		{
			Name: "greeting BYE", Security: "ssl", Script: raw("* BYE [UNAVAILABLE] too many connections\r\n"),
			Check: &Want{Step: "greeting", Reply: "BYE [UNAVAILABLE] too many connections"},
			Sync:  &Want{Step: "greeting", Err: "too many connections"},
		},
		{
			Name: "slowloris greeting", Security: "ssl", Stalls: true,
			Script: func() HostileScript {
				return func(c *HostileConn) error {
					return c.WriteSlowly("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hostile server ready and slow\r\n", 50*time.Millisecond)
				}
			},
			Check: &Want{Step: "greeting", Code: "timeout"},
			Sync:  &Want{Step: "greeting", Err: "timed out"},
		},
		{
			Name: "endless greeting line", Security: "ssl", Heap: true,
			Script: func() HostileScript {
				return func(c *HostileConn) error {
					if err := c.Write("* OK "); err != nil {
						return err
					}
					_, err := c.Flood("A", 0)
					return err
				}
			},
			Check: &Want{Step: "greeting", Err: "larger than"},
			Sync:  &Want{Step: "greeting", Err: "larger than"},
		},
		{
			Name: "10 MB greeting line, then close", Security: "ssl", Heap: true,
			Script: func() HostileScript {
				return func(c *HostileConn) error {
					if err := c.Write("* OK "); err != nil {
						return err
					}
					_, err := c.Flood("B", hostileLongLine)
					return err
				}
			},
			Check: &Want{Step: "greeting", Err: "larger than"},
			Sync:  &Want{Step: "greeting", Err: "larger than"},
		},
		{
			Name: "512 KiB greeting line, then close", Security: "ssl",
			Script: func() HostileScript {
				return func(c *HostileConn) error {
					if err := c.Write("* OK "); err != nil {
						return err
					}
					_, err := c.Flood("C", 512<<10)
					return err
				}
			},
			Check: &Want{Step: "greeting", Code: "connection_closed"},
			Sync:  &Want{Step: "greeting", Err: "closed"},
		},
		{
			Name: "NUL bytes in the greeting", Security: "ssl",
			Script: imapScript(func(h *HostileIMAP) { h.Greeting = "* OK hostile\x00server\x00ready" }),
			Check:  &Want{},
			Sync:   &Want{Rows: 3},
		},

		// STARTTLS and the login.
		{
			Name: "PREAUTH on a connection that must upgrade", Security: "starttls",
			Script: imapScript(func(h *HostileIMAP) { h.Greeting = "* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] logged in already" }),
			Check:  &Want{Step: "starttls", Err: "PREAUTH"},
			Sync:   &Want{Step: "starttls", Err: "PREAUTH"},
		},
		{
			Name: "STARTTLS refused", Security: "starttls",
			Script: imapScript(imapOn("STARTTLS", func(c *HostileConn, cmd IMAPCommand) error {
				return c.Writef("%s NO [UNAVAILABLE] TLS is resting today\r\n", cmd.Tag)
			})),
			Check: &Want{Step: "starttls", Reply: "NO [UNAVAILABLE] TLS is resting today"},
			Sync:  &Want{Step: "starttls", Err: "TLS is resting today"},
		},
		{
			Name: "response injected after the STARTTLS OK", Security: "starttls",
			Script: imapScript(imapOn("STARTTLS", func(c *HostileConn, cmd IMAPCommand) error {
				if err := c.Writef("%s OK Begin TLS\r\n* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] injected\r\n", cmd.Tag); err != nil {
					return err
				}
				return c.StartTLS()
			})),
			Check: &Want{Step: "starttls", Err: "after its STARTTLS reply"},
			Sync:  &Want{Step: "starttls", Err: "after its STARTTLS reply"},
		},
		{
			Name: "STARTTLS OK, then clear text", Security: "starttls",
			Script: imapScript(imapOn("STARTTLS", func(c *HostileConn, cmd IMAPCommand) error {
				if err := c.Writef("%s OK Begin TLS\r\n", cmd.Tag); err != nil {
					return err
				}
				if _, err := c.ReadChunk(); err != nil { // the ClientHello
					return err
				}
				if err := c.Write("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] still in clear text\r\n"); err != nil {
					return err
				}
				return c.Hold()
			})),
			Check: &Want{Step: "starttls", Code: "tls_not_spoken"},
			Sync:  &Want{Step: "starttls", Err: "tls"},
		},
		{
			Name: "LOGINDISABLED announced", Security: "none",
			Script: imapScript(func(h *HostileIMAP) {
				h.Greeting = "* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] no clear-text logins"
				h.Caps = "IMAP4rev1 LOGINDISABLED"
			}),
			Check: &Want{Step: "login", Code: "auth_needs_tls"},
			Sync:  &Want{Step: "login", Err: "does not allow LOGIN"},
		},
		{
			Name: "LOGIN refused, echoing the password", Security: "ssl",
			Script: imapScript(func(h *HostileIMAP) {
				h.Login = func(user, pass string) string {
					return "NO [AUTHENTICATIONFAILED] wrong password " + pass + " for " + user
				}
			}),
			Check: &Want{Step: "login", Code: "auth_rejected", Reply: "wrong password [redacted]"},
			Sync:  &Want{Step: "login", Err: "wrong password [redacted]"},
		},
		{
			Name: "BYE during LOGIN", Security: "ssl",
			Script: imapScript(imapOn("LOGIN", func(c *HostileConn, cmd IMAPCommand) error {
				if err := c.Write("* BYE [UNAVAILABLE] shutting down\r\n"); err != nil {
					return err
				}
				return errHangUp
			})),
			Check: &Want{Step: "login"},
			Sync:  &Want{Step: "login"},
		},
		{
			Name: "tagged reply to a command never sent", Security: "ssl",
			Script: imapScript(imapOn("LOGIN", func(c *HostileConn, cmd IMAPCommand) error {
				return c.Writef("Z999 OK who asked\r\n%s OK LOGIN done\r\n", cmd.Tag)
			})),
			Check: &Want{Step: "login", Err: "unknown tag"},
			Sync:  &Want{Step: "login", Err: "unknown tag"},
		},
		{
			Name: "unexpected continuation request", Security: "ssl",
			Script: imapScript(imapOn("LOGIN", func(c *HostileConn, cmd IMAPCommand) error {
				if err := c.Write("+ tell me more\r\n"); err != nil {
					return err
				}
				return c.Hold()
			})),
			Check: &Want{Step: "login", Err: "continuation"},
			Sync:  &Want{Step: "login", Err: "continuation"},
		},
		{
			Name: "half-open after the greeting", Security: "ssl", Stalls: true,
			Script: imapScript(imapOn("LOGIN", func(c *HostileConn, cmd IMAPCommand) error { return c.Hold() })),
			Check:  &Want{Step: "login", Code: "timeout"},
			Sync:   &Want{Step: "login", Err: "timed out"},
		},

		// LIST (the check only: the sync does not list).
		{
			Name: "2 GiB literal announced in LIST", Security: "ssl", Heap: true,
			Script: imapScript(imapOn("LIST", func(c *HostileConn, cmd IMAPCommand) error {
				if err := c.Writef("* LIST () \"/\" {%d}\r\n", hostileHugeLiteral); err != nil {
					return err
				}
				_, err := c.Flood("INBOX", 0)
				return err
			})),
			Check: &Want{Step: "list", Err: "larger than"},
		},
		{
			Name: "endless LIST line", Security: "ssl", Heap: true,
			Script: imapScript(imapOn("LIST", func(c *HostileConn, cmd IMAPCommand) error {
				if err := c.Write("* LIST () \"/\" "); err != nil {
					return err
				}
				_, err := c.Flood("INBOX", 0)
				return err
			})),
			Check: &Want{Step: "list", Err: "larger than"},
		},
		{
			Name: "10 MB LIST line", Security: "ssl", Heap: true,
			Script: imapScript(imapOn("LIST", func(c *HostileConn, cmd IMAPCommand) error {
				if err := c.Write("* LIST () \"/\" "); err != nil {
					return err
				}
				if _, err := c.Flood("Z", hostileLongLine); err != nil {
					return err
				}
				return errHangUp
			})),
			Check: &Want{Step: "list", Err: "larger than"},
		},
		{
			Name: "512 KiB LIST line, then close", Security: "ssl",
			Script: imapScript(imapOn("LIST", func(c *HostileConn, cmd IMAPCommand) error {
				if err := c.Write("* LIST () \"/\" "); err != nil {
					return err
				}
				if _, err := c.Flood("Z", 512<<10); err != nil {
					return err
				}
				return errHangUp
			})),
			Check: &Want{Step: "list"},
		},
		{
			Name: "number overflow in an untagged response", Security: "ssl",
			Script: imapScript(imapOn("LIST", func(c *HostileConn, cmd IMAPCommand) error {
				return c.Writef("* 99999999999999999999 EXISTS\r\n%s OK LIST done\r\n", cmd.Tag)
			})),
			Check: &Want{Step: "list", Err: "out of range"},
		},
		{
			Name: "NUL bytes in a folder name", Security: "ssl",
			Script: imapScript(imapOn("LIST", func(c *HostileConn, cmd IMAPCommand) error {
				return c.Writef("* LIST () \"/\" INBOX\r\n* LIST () \"/\" \"Se\x00nt\"\r\n%s OK LIST done\r\n", cmd.Tag)
			})),
			Check: &Want{Step: "list"},
		},

		// EXAMINE (the sync only from here).
		{
			Name: "EXAMINE refused with NO", Security: "ssl",
			Script: imapScript(imapOn("EXAMINE", func(c *HostileConn, cmd IMAPCommand) error {
				return c.Writef("%s NO [NONEXISTENT] no such folder\r\n", cmd.Tag)
			})),
			Sync: &Want{Step: "select", Err: `select "INBOX": imap: NO [NONEXISTENT] no such folder`},
		},
		{
			Name: "EXAMINE answered with BAD", Security: "ssl",
			Script: imapScript(imapOn("EXAMINE", func(c *HostileConn, cmd IMAPCommand) error {
				return c.Writef("%s BAD what is EXAMINE\r\n", cmd.Tag)
			})),
			Sync: &Want{Step: "select", Err: "BAD what is EXAMINE"},
		},
		{
			Name: "no UIDVALIDITY", Security: "ssl",
			Script: imapScript(func(h *HostileIMAP) { h.UIDValidity = 0 }),
			Sync:   &Want{Step: "select", Err: "UIDVALIDITY"},
		},
		{
			Name: "UIDVALIDITY 0", Security: "ssl",
			Script: imapScript(imapOn("EXAMINE", func(c *HostileConn, cmd IMAPCommand) error {
				return c.Writef("* 3 EXISTS\r\n* OK [UIDVALIDITY 0] zero\r\n* OK [UIDNEXT 4] ok\r\n%s OK [READ-ONLY] done\r\n", cmd.Tag)
			})),
			Sync: &Want{Step: "select", Err: "UIDVALIDITY"},
		},
		{
			// RFC 3501 requires UIDNEXT; without it every sync is a full
			// diff, which is correct, only slower.
			Name: "no UIDNEXT", Security: "ssl",
			Script: imapScript(func(h *HostileIMAP) { h.UIDNext = -1 }),
			Sync:   &Want{Rows: 3},
		},
		{
			Name: "CONDSTORE announced, EXAMINE (CONDSTORE) refused", Security: "ssl",
			Script: imapScript(func(h *HostileIMAP) {
				h.Caps = "IMAP4rev1 AUTH=PLAIN CONDSTORE IDLE"
				imapOn("EXAMINE", func(c *HostileConn, cmd IMAPCommand) error {
					return c.Writef("%s BAD unknown parameter CONDSTORE\r\n", cmd.Tag)
				})(h)
			}),
			Sync: &Want{Step: "select", Err: "unknown parameter CONDSTORE"},
		},
		{
			Name: "ESEARCH announced, refused", Security: "ssl",
			Script: imapScript(func(h *HostileIMAP) {
				h.Caps = "IMAP4rev1 AUTH=PLAIN ESEARCH"
				imapOn("UID SEARCH", func(c *HostileConn, cmd IMAPCommand) error {
					return c.Writef("%s BAD RETURN is not a thing\r\n", cmd.Tag)
				})(h)
			}),
			Sync: &Want{Step: "search", Err: "RETURN is not a thing"},
		},
		{
			Name: "half-open after EXAMINE", Security: "ssl", Stalls: true,
			Script: imapScript(imapOn("EXAMINE", func(c *HostileConn, cmd IMAPCommand) error { return c.Hold() })),
			Sync:   &Want{Step: "select", Err: "did not answer within the command deadline"},
		},
		{
			Name: "ESEARCH claiming four billion UIDs", Security: "ssl",
			Script: imapScript(func(h *HostileIMAP) {
				h.Caps = "IMAP4rev1 AUTH=PLAIN ESEARCH"
				imapOn("UID SEARCH", func(c *HostileConn, cmd IMAPCommand) error {
					return c.Writef("* ESEARCH (TAG %q) UID ALL 1:4294967295\r\n%s OK done\r\n", cmd.Tag, cmd.Tag)
				})(h)
			}),
			Sync: &Want{Step: "search", Err: "lists 4294967295 UIDs"},
		},
		{
			Name: "endless SEARCH of distinct UIDs", Security: "ssl", Heap: true,
			Script: imapScript(imapOn("UID SEARCH", func(c *HostileConn, cmd IMAPCommand) error {
				if err := c.Write("* SEARCH"); err != nil {
					return err
				}
				var b strings.Builder
				for n := 1; ; {
					b.Reset()
					for b.Len() < 64<<10 {
						fmt.Fprintf(&b, " %d", n)
						n += 2
					}
					if err := c.Write(b.String()); err != nil {
						return err
					}
				}
			})),
			// Whichever comes first: the 8 MiB bound, or the command
			// deadline (go-imap parses numbers slowly under -race).
			Sync: &Want{Step: "search"},
		},
		{
			Name: "UID 0 in SEARCH", Security: "ssl",
			Script: imapScript(imapOn("UID SEARCH", func(c *HostileConn, cmd IMAPCommand) error {
				return c.Writef("* SEARCH 0 1 2 3\r\n%s OK done\r\n", cmd.Tag)
			})),
			Sync: &Want{Rows: 3},
		},
		{
			Name: "duplicate UIDs in SEARCH and FETCH", Security: "ssl",
			Script: imapScript(func(h *HostileIMAP) {
				h.Handle = func(c *HostileConn, cmd IMAPCommand) (bool, error) {
					switch cmd.Name {
					case "UID SEARCH":
						return true, c.Writef("* SEARCH 1 1 2 3 3 2\r\n%s OK done\r\n", cmd.Tag)
					case "UID FETCH":
						_, rest, _ := strings.Cut(cmd.Args, " ")
						for _, m := range append(h.Messages, h.Messages...) {
							if err := c.Write(FetchResponse(int(m.UID), m, rest)); err != nil {
								return true, err
							}
						}
						return true, c.Writef("%s OK done\r\n", cmd.Tag)
					}
					return false, nil
				}
			}),
			Sync: &Want{Rows: 3},
		},

		{
			// RFC 7162 3.1.2.1: HIGHESTMODSEQ never goes down while
			// UIDVALIDITY stays. When it does (a restored server), the
			// stored mod-sequences mean nothing: every flag is compared.
			Name: "HIGHESTMODSEQ going backwards between syncs", Security: "ssl", Twice: true,
			Script: imapScript(func(h *HostileIMAP) {
				h.Caps = "IMAP4rev1 AUTH=PLAIN CONDSTORE"
				h.HighestModSeq = 100
				h.Handle = func(c *HostileConn, cmd IMAPCommand) (bool, error) {
					if c.ID == 1 {
						return false, nil
					}
					// The second session: modseq back at 50, and message 2
					// flagged \Seen at modseq 40.
					switch cmd.Name {
					case "EXAMINE", "SELECT":
						return true, c.Writef("* 3 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 4] ok\r\n* OK [HIGHESTMODSEQ 50] ok\r\n%s OK [READ-ONLY] done\r\n", cmd.Tag)
					case "UID FETCH":
						_, rest, _ := strings.Cut(cmd.Args, " ")
						for i, m := range h.Messages {
							m.ModSeq = 10
							if m.UID == 2 {
								m.Flags, m.ModSeq = `\Seen`, 40
							}
							if inUIDSet(strings.Fields(cmd.Args)[0], m.UID, 3) && !strings.Contains(strings.ToUpper(rest), "CHANGEDSINCE 100") {
								if err := c.Write(FetchResponse(i+1, m, rest)); err != nil {
									return true, err
								}
							}
						}
						return true, c.Writef("%s OK done\r\n", cmd.Tag)
					}
					return false, nil
				}
			}),
			Sync: &Want{Rows: 3},
		},
		{
			Name: "IDLE announced, then refused", Security: "ssl", Worker: true,
			Script: imapScript(func(h *HostileIMAP) {
				h.Caps = "IMAP4rev1 AUTH=PLAIN IDLE"
				imapOn("IDLE", func(c *HostileConn, cmd IMAPCommand) error {
					return c.Writef("%s BAD IDLE is for the lazy\r\n", cmd.Tag)
				})(h)
			}),
			Sync: &Want{Step: "idle", Err: "IDLE is for the lazy", Rows: 3},
		},

		// FETCH.
		{
			Name: "UID 0 in FETCH", Security: "ssl",
			Script: imapScript(fetchThen(func(c *HostileConn, h *HostileIMAP, cmd IMAPCommand) error {
				_, rest, _ := strings.Cut(cmd.Args, " ")
				bad := h.Messages[0]
				bad.UID = 0
				for i, m := range append([]HostileMessage{bad}, h.Messages[1:]...) {
					if err := c.Write(FetchResponse(i+1, m, rest)); err != nil {
						return err
					}
				}
				return c.Writef("%s OK done\r\n", cmd.Tag)
			})),
			Sync: &Want{Rows: 2},
		},
		{
			Name: "FETCH of a UID never asked for", Security: "ssl",
			Script: imapScript(fetchThen(func(c *HostileConn, h *HostileIMAP, cmd IMAPCommand) error {
				_, rest, _ := strings.Cut(cmd.Args, " ")
				stranger := HostileMessage{UID: 99, Body: msg}
				for i, m := range append([]HostileMessage{stranger}, h.Messages...) {
					if err := c.Write(FetchResponse(i+1, m, rest)); err != nil {
						return err
					}
				}
				return c.Writef("%s OK done\r\n", cmd.Tag)
			})),
			Sync: &Want{Rows: 3},
		},
		{
			Name: "unknown FETCH item", Security: "ssl",
			Script: imapScript(fetchThen(func(c *HostileConn, h *HostileIMAP, cmd IMAPCommand) error {
				return c.Writef("* 1 FETCH (UID 1 X-HOSTILE-ITEM (1 2 3) FLAGS ())\r\n%s OK done\r\n", cmd.Tag)
			})),
			Sync: &Want{Step: "fetch", Err: "X-HOSTILE-ITEM"},
		},
		{
			Name: "EXPUNGE during FETCH", Security: "ssl",
			Script: imapScript(fetchThen(func(c *HostileConn, h *HostileIMAP, cmd IMAPCommand) error {
				_, rest, _ := strings.Cut(cmd.Args, " ")
				for i, m := range h.Messages {
					if err := c.Write(FetchResponse(i+1, m, rest) + "* 1 EXPUNGE\r\n"); err != nil {
						return err
					}
				}
				return c.Writef("%s OK done\r\n", cmd.Tag)
			})),
			Sync: &Want{Rows: 3},
		},
		{
			Name: "BYE in the middle of FETCH", Security: "ssl",
			Script: imapScript(fetchThen(func(c *HostileConn, h *HostileIMAP, cmd IMAPCommand) error {
				_, rest, _ := strings.Cut(cmd.Args, " ")
				if err := c.Write(FetchResponse(3, h.Messages[2], rest) + "* BYE [UNAVAILABLE] going down for maintenance\r\n"); err != nil {
					return err
				}
				return errHangUp
			})),
			Sync: &Want{Step: "fetch", Rows: anyRows},
		},
		{
			Name: "2 GiB literal announced in BODY[], then silence", Security: "ssl", Heap: true, Stalls: true,
			Script: imapScript(fetchThen(func(c *HostileConn, h *HostileIMAP, cmd IMAPCommand) error {
				if err := c.Writef("* 1 FETCH (UID 1 FLAGS () BODY[] {%d}\r\n%s", hostileHugeLiteral, msg); err != nil {
					return err
				}
				if _, err := c.Flood("x", 1<<20); err != nil {
					return err
				}
				return c.Hold()
			})),
			Sync: &Want{Step: "fetch", Err: "did not answer within the command deadline"},
		},
		{
			// At the sync's default MaxMessageBytes, the body is read into
			// memory: the announcement alone must not allocate it.
			Name: "64 MiB literal announced in BODY[], then silence", Security: "ssl", Heap: true, Stalls: true,
			Script: imapScript(fetchThen(func(c *HostileConn, h *HostileIMAP, cmd IMAPCommand) error {
				if err := c.Writef("* 1 FETCH (UID 1 FLAGS () BODY[] {%d}\r\n%s", 64<<20, msg); err != nil {
					return err
				}
				return c.Hold()
			})),
			Sync: &Want{Step: "fetch", Err: "did not answer within the command deadline"},
		},
		{
			Name: "literal shorter than announced, then close", Security: "ssl",
			Script: imapScript(fetchThen(func(c *HostileConn, h *HostileIMAP, cmd IMAPCommand) error {
				if err := c.Writef("* 1 FETCH (UID 1 FLAGS () BODY[] {5000}\r\n%s", msg); err != nil {
					return err
				}
				return errHangUp
			})),
			Sync: &Want{Step: "fetch", Err: "of 5000 bytes"},
		},
		{
			Name: "2 GiB literal announced in ENVELOPE", Security: "ssl", Heap: true,
			Script: imapScript(fetchThen(func(c *HostileConn, h *HostileIMAP, cmd IMAPCommand) error {
				if err := c.Writef("* 1 FETCH (UID 1 ENVELOPE ({%d}\r\n", hostileHugeLiteral); err != nil {
					return err
				}
				_, err := c.Flood("Subject ", 0)
				return err
			})),
			Sync: &Want{Step: "fetch", Err: "larger than"},
		},
		{
			Name: "endless FETCH line", Security: "ssl", Heap: true,
			Script: imapScript(fetchThen(func(c *HostileConn, h *HostileIMAP, cmd IMAPCommand) error {
				if err := c.Write("* 1 FETCH (UID 1 FLAGS (\\Seen "); err != nil {
					return err
				}
				_, err := c.Flood("$Label ", 0)
				return err
			})),
			// Whichever comes first: the 1 MiB bound, or the command
			// deadline (go-imap allocates each flag; slow under -race).
			Sync: &Want{Step: "fetch"},
		},
		{
			Name: "parentheses nested a million deep", Security: "ssl",
			Script: imapScript(fetchThen(func(c *HostileConn, h *HostileIMAP, cmd IMAPCommand) error {
				if err := c.Write("* 1 FETCH (UID 1 BODYSTRUCTURE "); err != nil {
					return err
				}
				if _, err := c.Flood("(", 1<<20); err != nil {
					return err
				}
				return c.Hold()
			})),
			Sync: &Want{Step: "fetch", Err: "nested over 128 deep"},
		},
		{
			Name: "NUL byte in FLAGS", Security: "ssl",
			Script: imapScript(fetchThen(func(c *HostileConn, h *HostileIMAP, cmd IMAPCommand) error {
				return c.Writef("* 1 FETCH (UID 1 FLAGS (\\Seen $Evi\x00l) BODY[] {%d}\r\n%s)\r\n%s OK done\r\n", len(msg), msg, cmd.Tag)
			})),
			Sync: &Want{Step: "fetch"},
		},
		{
			Name: "NUL bytes in a message header", Security: "ssl",
			Script: imapScript(func(h *HostileIMAP) {
				h.Messages[0].Body = strings.Replace(h.Messages[0].Body, "Subject: message 1", "Subject: mess\x00age\x00 1", 1)
			}),
			Sync: &Want{Rows: 3},
		},
		{
			Name: "BODY[] NIL", Security: "ssl",
			Script: imapScript(fetchThen(func(c *HostileConn, h *HostileIMAP, cmd IMAPCommand) error {
				_, rest, _ := strings.Cut(cmd.Args, " ")
				for i, m := range h.Messages[1:] {
					if err := c.Write(FetchResponse(i+2, m, rest)); err != nil {
						return err
					}
				}
				return c.Writef("* 1 FETCH (UID 1 FLAGS () BODY[] NIL)\r\n%s OK done\r\n", cmd.Tag)
			})),
			Sync: &Want{Rows: 2},
		},
		{
			Name: "slowloris message body", Security: "ssl", Stalls: true,
			Script: imapScript(fetchThen(func(c *HostileConn, h *HostileIMAP, cmd IMAPCommand) error {
				body := strings.Repeat(msg, 20)
				if err := c.Writef("* 1 FETCH (UID 1 FLAGS () BODY[] {%d}\r\n", len(body)); err != nil {
					return err
				}
				return c.WriteSlowly(body, 20*time.Millisecond)
			})),
			Sync: &Want{Step: "fetch", Err: "did not answer within the command deadline"},
		},
		{
			Name: "half-open in the middle of FETCH", Security: "ssl", Stalls: true,
			Script: imapScript(fetchThen(func(c *HostileConn, h *HostileIMAP, cmd IMAPCommand) error {
				_, rest, _ := strings.Cut(cmd.Args, " ")
				if err := c.Write(FetchResponse(3, h.Messages[2], rest)); err != nil {
					return err
				}
				return c.Hold()
			})),
			Sync: &Want{Step: "fetch", Err: "did not answer within the command deadline", Rows: anyRows},
		},
	}
	for i := range cases {
		cases[i].Protocol = "imap"
	}
	return cases
}

// smtpScript builds the script of a HostileSMTP changed by edit.
func smtpScript(edit func(h *HostileSMTP)) func() HostileScript {
	return func() HostileScript {
		h := &HostileSMTP{}
		if edit != nil {
			edit(h)
		}
		return h.Serve
	}
}

// smtpOn answers the command verb with f, the rest by default.
func smtpOn(verb string, f func(c *HostileConn, line string) error) func() HostileScript {
	return smtpScript(func(h *HostileSMTP) {
		h.Handle = func(c *HostileConn, v, line string) (bool, error) {
			if v != verb {
				return false, nil
			}
			return true, f(c, line)
		}
	})
}

// reply is an smtpOn answer that writes s.
func reply(s string) func(c *HostileConn, line string) error {
	return func(c *HostileConn, _ string) error { return c.Write(s) }
}

// replyThenHangUp writes s and closes the connection.
func replyThenHangUp(s string) func(c *HostileConn, line string) error {
	return func(c *HostileConn, _ string) error {
		if err := c.Write(s); err != nil {
			return err
		}
		return errHangUp
	}
}

// SMTPCases are the hostile SMTP servers. The check runs with a test
// recipient, so that it goes through DATA as the worker does.
func SMTPCases() []HostileCase {
	cases := []HostileCase{
		// The greeting.
		{
			Name: "greeting never sent", Security: "starttls", Stalls: true,
			Script: func() HostileScript { return (*HostileConn).Hold },
			Check:  &Want{Step: "ehlo", Code: "timeout"},
			Send:   &Want{Step: "ehlo", Err: "timed out", Status: "queued"},
		},
		{
			Name: "closed before the greeting", Security: "starttls",
			Script: func() HostileScript { return func(*HostileConn) error { return nil } },
			Check:  &Want{Step: "ehlo"},
			Send:   &Want{Step: "ehlo", Status: "queued"},
		},
		{
			Name: "greeting garbage", Security: "starttls", Script: raw("HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n"),
			Check: &Want{Step: "ehlo", Code: "protocol_error"},
			Send:  &Want{Step: "ehlo", Err: "HTTP/1.1 400", Status: "queued"},
		},
		{
			// "SSH-" reads as a continuation line with a bad code:
			// net/textproto waits for the reply's last line, until the
			// deadline (and the 64 KiB bound).
			Name: "greeting garbage that reads as a continuation", Security: "starttls", Stalls: true,
			Script: raw("SSH-2.0-OpenSSH_9.6p1 Debian\r\n"),
			Check:  &Want{Step: "ehlo", Code: "timeout"},
			Send:   &Want{Step: "ehlo", Err: "timed out", Status: "queued"},
		},
		{
			Name: "greeting 554", Security: "starttls", Script: raw("554 5.3.2 no SMTP service here\r\n"),
			Check: &Want{Step: "ehlo", Reply: "no SMTP service here"},
			Send:  &Want{Step: "ehlo", Reply: "no SMTP service here", Status: "failed"},
		},
		{
			Name: "greeting 421, then close", Security: "starttls", Script: smtpScript(func(h *HostileSMTP) {
				h.Greeting = "421 4.3.2 too busy, come back later\r\n"
				h.Handle = func(*HostileConn, string, string) (bool, error) { return true, errHangUp }
			}),
			Check: &Want{Step: "ehlo", Reply: "too busy"},
			Send:  &Want{Step: "ehlo", Reply: "too busy", Status: "queued"},
		},
		{
			Name: "slowloris greeting", Security: "starttls", Stalls: true,
			Script: func() HostileScript {
				return func(c *HostileConn) error {
					return c.WriteSlowly("220 hostile ESMTP, slowly, very slowly, one byte at a time\r\n", 50*time.Millisecond)
				}
			},
			Check: &Want{Step: "ehlo", Code: "timeout"},
			Send:  &Want{Step: "ehlo", Err: "timed out", Status: "queued"},
		},
		{
			Name: "endless greeting line", Security: "starttls", Heap: true,
			Script: func() HostileScript {
				return func(c *HostileConn) error {
					if err := c.Write("220 "); err != nil {
						return err
					}
					_, err := c.Flood("A", 0)
					return err
				}
			},
			Check: &Want{Step: "ehlo", Err: "larger than"},
			Send:  &Want{Step: "ehlo", Err: "larger than", Status: "queued"},
		},
		{
			Name: "10 MB greeting line", Security: "starttls", Heap: true,
			Script: func() HostileScript {
				return func(c *HostileConn) error {
					if err := c.Write("220 "); err != nil {
						return err
					}
					if _, err := c.Flood("B", hostileLongLine); err != nil {
						return err
					}
					return c.Write("\r\n")
				}
			},
			Check: &Want{Step: "ehlo", Err: "larger than"},
			Send:  &Want{Step: "ehlo", Err: "larger than", Status: "queued"},
		},
		{
			Name: "multi-line reply that never ends", Security: "starttls", Heap: true,
			Script: smtpOn("EHLO", func(c *HostileConn, _ string) error {
				_, err := c.Flood("250-x\r\n", 0)
				return err
			}),
			Check: &Want{Step: "ehlo", Err: "larger than"},
			Send:  &Want{Step: "ehlo", Err: "larger than", Status: "queued"},
		},

		// EHLO.
		{
			Name: "reply code garbage", Security: "starttls", Script: smtpScript(func(h *HostileSMTP) {
				h.Handle = func(c *HostileConn, verb, _ string) (bool, error) {
					if verb == "EHLO" || verb == "HELO" {
						return true, c.Write("2x0 hello\r\n")
					}
					return false, nil
				}
			}),
			Check: &Want{Step: "ehlo", Code: "protocol_error"},
			Send:  &Want{Step: "ehlo", Err: "2x0", Status: "queued"},
		},
		{
			// net/textproto reads on, for a line with the first line's
			// code, until the deadline (and the 64 KiB bound).
			Name: "multi-line reply with mismatched codes", Security: "starttls", Stalls: true,
			Script: smtpOn("EHLO", reply("250-hostile\r\n550 5.0.0 changed my mind\r\n")),
			Check:  &Want{Step: "ehlo", Code: "timeout"},
			Send:   &Want{Step: "ehlo", Err: "timed out", Status: "queued"},
		},
		{
			Name: "EHLO and HELO refused", Security: "starttls", Script: smtpScript(func(h *HostileSMTP) {
				h.Handle = func(c *HostileConn, verb, _ string) (bool, error) {
					if verb == "EHLO" || verb == "HELO" {
						return true, c.Write("550 5.7.1 go away\r\n")
					}
					return false, nil
				}
			}),
			Check: &Want{Step: "ehlo", Reply: "go away"},
			Send:  &Want{Step: "ehlo", Reply: "go away", Status: "failed"},
		},
		{
			Name: "an extra reply after the greeting", Security: "starttls",
			Script: smtpScript(func(h *HostileSMTP) { h.Greeting = "220 hostile ESMTP\r\n250 AUTH PLAIN\r\n" }),
			Check:  &Want{Step: "starttls", Code: "starttls_missing"},
			Send:   &Want{Step: "starttls", Err: "does not offer STARTTLS", Status: "failed"},
		},
		{
			Name: "NUL bytes and invalid UTF-8 in the EHLO reply", Security: "starttls",
			Script: smtpScript(func(h *HostileSMTP) {
				h.EHLO = "250-hostile\x00greets \xff\xfe you\r\n250-STARTTLS\r\n250-AUTH PLAIN\x00 LOGIN\r\n250 SIZE \x00\r\n"
			}),
			Check: &Want{},
			Send:  &Want{Status: "sent"},
		},
		{
			Name: "SIZE announced past int64", Security: "starttls",
			Script: smtpScript(func(h *HostileSMTP) {
				h.EHLO = "250-hostile\r\n250-STARTTLS\r\n250-AUTH PLAIN\r\n250 SIZE 99999999999999999999999\r\n"
			}),
			Check: &Want{},
			Send:  &Want{Status: "sent"},
		},

		// STARTTLS.
		{
			Name: "STARTTLS not offered", Security: "starttls",
			Script: smtpScript(func(h *HostileSMTP) { h.EHLO = "250-hostile\r\n250 AUTH PLAIN LOGIN\r\n" }),
			Check:  &Want{Step: "starttls", Code: "starttls_missing"},
			Send:   &Want{Step: "starttls", Err: "does not offer STARTTLS", Status: "failed"},
		},
		{
			Name: "STARTTLS offered, then refused", Security: "starttls",
			Script: smtpOn("STARTTLS", reply("454 4.7.0 TLS not available due to local problem\r\n")),
			Check:  &Want{Step: "starttls", Reply: "TLS not available"},
			Send:   &Want{Step: "starttls", Reply: "TLS not available", Status: "queued"},
		},
		{
			Name: "reply injected after 220 Ready to start TLS", Security: "starttls",
			Script: smtpOn("STARTTLS", func(c *HostileConn, _ string) error {
				if err := c.Write("220 2.0.0 Ready to start TLS\r\n250-injected\r\n250 AUTH PLAIN\r\n"); err != nil {
					return err
				}
				return c.StartTLS()
			}),
			Check: &Want{Step: "starttls", Code: "protocol_error", Err: "after its STARTTLS reply"},
			Send:  &Want{Step: "starttls", Err: "after its STARTTLS reply", Status: "queued"},
		},
		{
			Name: "220 Ready, then clear text", Security: "starttls",
			Script: smtpOn("STARTTLS", func(c *HostileConn, _ string) error {
				if err := c.Write("220 2.0.0 Ready to start TLS\r\n"); err != nil {
					return err
				}
				if _, err := c.ReadChunk(); err != nil { // the ClientHello
					return err
				}
				if err := c.Write("250 still in clear text\r\n"); err != nil {
					return err
				}
				return c.Hold()
			}),
			Check: &Want{Step: "starttls", Code: "tls_not_spoken"},
			Send:  &Want{Step: "starttls", Err: "tls", Status: "failed"},
		},
		{
			Name: "implicit TLS port speaking clear text", Security: "ssl", Clear: true,
			Script: func() HostileScript {
				return func(c *HostileConn) error {
					if err := c.Write("220 hostile ESMTP in clear text\r\n"); err != nil {
						return err
					}
					return c.Hold()
				}
			},
			Check: &Want{Step: "tls", Code: "tls_not_spoken"},
			Send:  &Want{Step: "tls", Err: "tls", Status: "failed"},
		},

		// AUTH.
		{
			Name: "2xx, then drop at AUTH", Security: "starttls", Script: smtpOn("AUTH", func(*HostileConn, string) error { return errHangUp }),
			Check: &Want{Step: "auth"},
			Send:  &Want{Step: "auth", Status: "queued"},
		},
		{
			Name: "AUTH announced, then unknown", Security: "starttls",
			Script: smtpOn("AUTH", reply("504 5.5.4 unrecognized authentication type\r\n")),
			Check:  &Want{Step: "auth", Reply: "unrecognized authentication type"},
			Send:   &Want{Step: "auth", Reply: "unrecognized authentication type", Status: "queued"},
		},
		{
			Name: "AUTH challenge garbage", Security: "starttls",
			Script: smtpOn("AUTH", func(c *HostileConn, _ string) error {
				if err := c.Write("334 %%%not base64 at all%%%\r\n"); err != nil {
					return err
				}
				if _, err := c.ReadLine(); err != nil {
					return errHangUp
				}
				return c.Write("501 5.5.2 cancelled\r\n")
			}),
			Check: &Want{Step: "auth"},
			Send:  &Want{Step: "auth", Status: "queued"},
		},
		{
			Name: "AUTH LOGIN challenges that never end", Security: "starttls",
			Script: smtpScript(func(h *HostileSMTP) {
				h.EHLO = "250-hostile\r\n250-STARTTLS\r\n250 AUTH LOGIN\r\n"
				h.Handle = func(c *HostileConn, verb, _ string) (bool, error) {
					if verb != "AUTH" {
						return false, nil
					}
					for range 50 {
						if err := c.Write("334 UGFzc3dvcmQ6\r\n"); err != nil {
							return true, err
						}
						if _, err := c.ReadLine(); err != nil {
							return true, errHangUp
						}
					}
					return true, c.Write("535 5.7.8 enough\r\n")
				}
			}),
			Check: &Want{Step: "auth"},
			Send:  &Want{Step: "auth", Status: "queued"},
		},
		{
			Name: "AUTH refused, echoing the password", Security: "starttls",
			Script: smtpOn("AUTH", func(c *HostileConn, line string) error {
				return c.Writef("535 5.7.8 bad credentials %s\r\n", strings.TrimPrefix(line, "AUTH PLAIN "))
			}),
			Check: &Want{Step: "auth", Code: "auth_rejected", Reply: "bad credentials [redacted]"},
			Send:  &Want{Step: "auth", Reply: "bad credentials [redacted]", Status: "queued"},
		},

		// The transaction.
		{
			Name: "MAIL FROM 451", Security: "starttls", Script: smtpOn("MAIL FROM", reply("451 4.3.0 try again later\r\n")),
			Check: &Want{Step: "mail_from", Reply: "try again later"},
			Send:  &Want{Step: "mail_from", Reply: "try again later", Status: "queued"},
		},
		{
			Name: "MAIL FROM 550", Security: "starttls", Script: smtpOn("MAIL FROM", reply("550 5.7.1 sender rejected\r\n")),
			Check: &Want{Step: "mail_from", Reply: "sender rejected"},
			Send:  &Want{Step: "mail_from", Reply: "sender rejected", Status: "failed"},
		},
		{
			Name: "NUL bytes and invalid UTF-8 in a refusal", Security: "starttls",
			Script: smtpOn("MAIL FROM", reply("550 5.7.1 sender \x00rejected \xff\xfe\r\n")),
			Check:  &Want{Step: "mail_from", Reply: "rejected"},
			Send:   &Want{Step: "mail_from", Reply: "rejected", Status: "failed"},
		},
		{
			Name: "RCPT 450", Security: "starttls", Script: smtpOn("RCPT TO", reply("450 4.2.1 mailbox busy\r\n")),
			Check: &Want{Step: "rcpt", Reply: "mailbox busy"},
			Send:  &Want{Step: "rcpt", Reply: "mailbox busy", Status: "queued"},
		},
		{
			Name: "RCPT 550", Security: "starttls", Script: smtpOn("RCPT TO", reply("550 5.1.1 no such user\r\n")),
			Check: &Want{Step: "rcpt", Reply: "no such user"},
			Send:  &Want{Step: "rcpt", Reply: "no such user", Status: "failed"},
		},
		{
			Name: "421 in the middle of the session", Security: "starttls",
			Script: smtpOn("RCPT TO", replyThenHangUp("421 4.3.2 shutting down\r\n")),
			Check:  &Want{Step: "rcpt", Reply: "shutting down"},
			Send:   &Want{Step: "rcpt", Reply: "shutting down", Status: "queued"},
		},
		{
			Name: "DATA refused with 554", Security: "starttls", Script: smtpOn("DATA", reply("554 5.5.1 no valid recipients\r\n")),
			Check: &Want{Step: "data", Reply: "no valid recipients"},
			Send:  &Want{Step: "data", Reply: "no valid recipients", Status: "failed"},
		},
		{
			Name: "DATA answered 250 instead of 354", Security: "starttls", Script: smtpOn("DATA", reply("250 2.0.0 sure\r\n")),
			Check: &Want{Step: "data"},
			Send:  &Want{Step: "data", Status: "failed"},
		},
		{
			Name: "354, then drop before the dot", Security: "starttls",
			Script: smtpOn("DATA", replyThenHangUp("354 go ahead\r\n")),
			// The message and its dot fit the socket's buffer: the client
			// cannot know whether they arrived.
			Check: &Want{Step: "data", Err: "may have been delivered"},
			Send:  &Want{Step: "data", Err: "may have been delivered", Status: "unknown"},
		},
		{
			Name: "554 after the dot", Security: "starttls", Script: smtpScript(func(h *HostileSMTP) {
				h.Handle = func(c *HostileConn, verb, _ string) (bool, error) {
					if verb != "." {
						return false, nil
					}
					return true, c.Write("554 5.7.1 message refused as spam\r\n")
				}
			}),
			Check: &Want{Step: "data", Reply: "refused as spam"},
			Send:  &Want{Step: "data", Reply: "refused as spam", Status: "failed"},
		},
		{
			Name: "drop after the dot", Security: "starttls", Script: smtpScript(func(h *HostileSMTP) {
				h.Handle = func(c *HostileConn, verb, _ string) (bool, error) {
					if verb != "." {
						return false, nil
					}
					return true, errHangUp
				}
			}),
			Check: &Want{Step: "data", Err: "may have been delivered"},
			Send:  &Want{Step: "data", Err: "may have been delivered", Status: "unknown"},
		},
		{
			Name: "no reply after the dot", Security: "starttls", Stalls: true, Script: smtpScript(func(h *HostileSMTP) {
				h.Handle = func(c *HostileConn, verb, _ string) (bool, error) {
					if verb != "." {
						return false, nil
					}
					return true, c.Hold()
				}
			}),
			Check: &Want{Step: "data", Code: "timeout", Err: "may have been delivered"},
			Send:  &Want{Step: "data", Err: "may have been delivered", Status: "unknown"},
		},
		{
			Name: "slowloris reply to RCPT", Security: "starttls", Stalls: true,
			Script: smtpOn("RCPT TO", func(c *HostileConn, _ string) error {
				return c.WriteSlowly("250 2.1.5 recipient ok, eventually\r\n", 50*time.Millisecond)
			}),
			Check: &Want{Step: "rcpt", Code: "timeout"},
			Send:  &Want{Step: "rcpt", Err: "timed out", Status: "queued"},
		},
		{
			Name: "half-open after MAIL FROM", Security: "starttls", Stalls: true,
			Script: smtpOn("MAIL FROM", func(c *HostileConn, _ string) error { return c.Hold() }),
			Check:  &Want{Step: "mail_from", Code: "timeout"},
			Send:   &Want{Step: "mail_from", Err: "timed out", Status: "queued"},
		},
		{
			Name: "2xx, then drop at RSET", Security: "starttls",
			Script: smtpOn("RSET", func(*HostileConn, string) error { return errHangUp }),
			Check:  &Want{},
			Send:   &Want{Status: "sent"},
		},
		{
			Name: "PIPELINING announced, replies out of step", Security: "starttls",
			Script: smtpScript(func(h *HostileSMTP) {
				h.EHLO = "250-hostile\r\n250-STARTTLS\r\n250-PIPELINING\r\n250 AUTH PLAIN\r\n"
				h.Handle = func(c *HostileConn, verb, _ string) (bool, error) {
					if verb == "MAIL FROM" {
						// One reply too many: every later reply answers the
						// wrong command.
						return true, c.Write("250 2.0.0 OK\r\n250 2.0.0 OK\r\n")
					}
					return false, nil
				}
			}),
			Check: &Want{Step: "data"},
			Send:  &Want{Step: "data", Status: "failed"},
		},
	}
	for i := range cases {
		cases[i].Protocol = "smtp"
	}
	return cases
}
