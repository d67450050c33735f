package testpeer

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// HostileIMAP is a small IMAP responder for hostile scripts: by default it
// answers what mailsync's check and sync send (CAPABILITY, LOGIN, LIST,
// EXAMINE/SELECT, UID SEARCH, UID FETCH, IDLE, LOGOUT) from Messages, and
// a row changes one answer with Handle or the fields. It is not a server:
// it trusts its client and parses only what it needs.
type HostileIMAP struct {
	// Greeting is the first line, without CRLF; default
	// "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hostile ready".
	Greeting string
	// Caps is the CAPABILITY list (without "CAPABILITY"); default
	// "IMAP4rev1 AUTH=PLAIN", plus STARTTLS when the peer has TLS and the
	// connection is not under TLS yet.
	Caps string
	// Login, when set, decides LOGIN: "" accepts, other text is the
	// tagged reply's status and text, e.g. "NO [AUTHENTICATIONFAILED] no".
	Login func(user, pass string) string
	// UIDValidity, UIDNext and HighestModSeq are EXAMINE's answers; 0
	// leaves the response code out. UIDNext -1 also leaves it out; 0
	// computes it from Messages.
	UIDValidity   uint32
	UIDNext       int64
	HighestModSeq uint64
	Messages      []HostileMessage
	// Handle, when set, sees every command first; it returns true when it
	// answered (or broke the connection) and the default must not.
	Handle func(c *HostileConn, cmd IMAPCommand) (bool, error)
}

// HostileMessage is one message of HostileIMAP's only folder (every name
// is the same folder).
type HostileMessage struct {
	UID    uint32
	Flags  string // e.g. `\Seen`
	ModSeq uint64
	Body   string
}

// IMAPCommand is one command a client sent.
type IMAPCommand struct {
	Tag  string
	Name string // upper case; "UID FETCH", "UID SEARCH"… for UID commands
	Args string // the rest of the line (literals inlined)
	Line string
}

// Serve is the HostileScript of the responder.
func (h *HostileIMAP) Serve(c *HostileConn) error {
	greeting := h.Greeting
	if greeting == "" {
		greeting = "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hostile ready"
	}
	if err := c.Write(greeting + "\r\n"); err != nil {
		return err
	}
	for {
		cmd, err := ReadIMAPCommand(c)
		if err != nil {
			return nil // the client hung up
		}
		if h.Handle != nil {
			done, err := h.Handle(c, cmd)
			if err != nil {
				return err
			}
			if done {
				continue
			}
		}
		end, err := h.answer(c, cmd)
		if err != nil || end {
			return err
		}
	}
}

// ReadIMAPCommand reads one command, with its literals ({n} after a "+"
// continuation, {n+} without).
func ReadIMAPCommand(c *HostileConn) (IMAPCommand, error) {
	var full strings.Builder
	for {
		line, err := c.ReadLine()
		if err != nil {
			return IMAPCommand{}, err
		}
		full.WriteString(line)
		n, plus, ok := trailingLiteral(line)
		if !ok {
			break
		}
		if !plus {
			if err := c.Write("+ go on\r\n"); err != nil {
				return IMAPCommand{}, err
			}
		}
		b, err := c.ReadFull(n)
		if err != nil {
			return IMAPCommand{}, err
		}
		full.Write(b)
	}
	line := full.String()
	tag, rest, _ := strings.Cut(line, " ")
	name, args, _ := strings.Cut(rest, " ")
	name = strings.ToUpper(name)
	if name == "UID" {
		sub, a, _ := strings.Cut(args, " ")
		name, args = "UID "+strings.ToUpper(sub), a
	}
	return IMAPCommand{Tag: tag, Name: name, Args: args, Line: line}, nil
}

func trailingLiteral(line string) (n int, plus, ok bool) {
	if !strings.HasSuffix(line, "}") {
		return 0, false, false
	}
	i := strings.LastIndexByte(line, '{')
	if i < 0 {
		return 0, false, false
	}
	num := line[i+1 : len(line)-1]
	if strings.HasSuffix(num, "+") || strings.HasSuffix(num, "-") {
		num, plus = num[:len(num)-1], true
	}
	v, err := strconv.Atoi(num)
	if err != nil || v < 0 {
		return 0, false, false
	}
	return v, plus, true
}

func (h *HostileIMAP) caps(c *HostileConn) string {
	if h.Caps != "" {
		return h.Caps
	}
	caps := "IMAP4rev1 AUTH=PLAIN"
	if c.p.opts.TLS != nil && !c.tls {
		caps += " STARTTLS"
	}
	return caps
}

// answer gives the default answer; end is true after LOGOUT.
func (h *HostileIMAP) answer(c *HostileConn, cmd IMAPCommand) (end bool, err error) {
	ok := func(text string) error { return c.Writef("%s OK %s\r\n", cmd.Tag, text) }
	switch cmd.Name {
	case "CAPABILITY":
		if err := c.Writef("* CAPABILITY %s\r\n", h.caps(c)); err != nil {
			return false, err
		}
		return false, ok("CAPABILITY done")
	case "NOOP", "CHECK", "CLOSE", "UNSELECT", "ENABLE", "ID":
		return false, ok(cmd.Name + " done")
	case "LOGOUT":
		if err := c.Write("* BYE bye\r\n"); err != nil {
			return true, err
		}
		return true, ok("LOGOUT done")
	case "STARTTLS":
		if c.p.opts.TLS == nil || c.tls {
			return false, c.Writef("%s BAD no STARTTLS here\r\n", cmd.Tag)
		}
		if err := ok("Begin TLS"); err != nil {
			return false, err
		}
		return false, c.StartTLS()
	case "LOGIN":
		verdict := ""
		if h.Login != nil {
			user, pass := splitLogin(cmd.Args)
			verdict = h.Login(user, pass)
		}
		if verdict != "" {
			return false, c.Writef("%s %s\r\n", cmd.Tag, verdict)
		}
		return false, ok("LOGIN done")
	case "LIST":
		if err := c.Write("* LIST () \"/\" INBOX\r\n* LIST () \"/\" Sent\r\n"); err != nil {
			return false, err
		}
		return false, ok("LIST done")
	case "SELECT", "EXAMINE":
		return false, h.selectFolder(c, cmd)
	case "UID SEARCH", "SEARCH":
		return false, h.search(c, cmd)
	case "UID FETCH":
		return false, h.fetch(c, cmd)
	case "IDLE":
		if err := c.Write("+ idling\r\n"); err != nil {
			return false, err
		}
		for {
			line, err := c.ReadLine()
			if err != nil {
				return true, nil
			}
			if strings.EqualFold(line, "DONE") {
				return false, ok("IDLE done")
			}
		}
	}
	return false, c.Writef("%s BAD unknown command %s\r\n", cmd.Tag, cmd.Name)
}

// SelectData writes EXAMINE's untagged data: EXISTS, and the response
// codes the fields ask for.
func (h *HostileIMAP) SelectData(c *HostileConn) error {
	var b strings.Builder
	fmt.Fprintf(&b, "* %d EXISTS\r\n* 0 RECENT\r\n* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft)\r\n", len(h.Messages))
	if h.UIDValidity != 0 {
		fmt.Fprintf(&b, "* OK [UIDVALIDITY %d] ok\r\n", h.UIDValidity)
	}
	switch {
	case h.UIDNext > 0:
		fmt.Fprintf(&b, "* OK [UIDNEXT %d] ok\r\n", h.UIDNext)
	case h.UIDNext == 0:
		next := uint32(1)
		for _, m := range h.Messages {
			next = max(next, m.UID+1)
		}
		fmt.Fprintf(&b, "* OK [UIDNEXT %d] ok\r\n", next)
	}
	if h.HighestModSeq != 0 {
		fmt.Fprintf(&b, "* OK [HIGHESTMODSEQ %d] ok\r\n", h.HighestModSeq)
	}
	return c.Write(b.String())
}

func (h *HostileIMAP) selectFolder(c *HostileConn, cmd IMAPCommand) error {
	if err := h.SelectData(c); err != nil {
		return err
	}
	return c.Writef("%s OK [READ-ONLY] %s done\r\n", cmd.Tag, cmd.Name)
}

func (h *HostileIMAP) search(c *HostileConn, cmd IMAPCommand) error {
	uids := make([]string, 0, len(h.Messages))
	for _, m := range h.Messages {
		uids = append(uids, strconv.FormatUint(uint64(m.UID), 10))
	}
	var line string
	if strings.Contains(strings.ToUpper(cmd.Args), "RETURN") {
		line = fmt.Sprintf("* ESEARCH (TAG %q) UID ALL %s\r\n", cmd.Tag, strings.Join(uids, ","))
		if len(uids) == 0 {
			line = fmt.Sprintf("* ESEARCH (TAG %q) UID\r\n", cmd.Tag)
		}
	} else {
		line = "* SEARCH " + strings.Join(uids, " ") + "\r\n"
	}
	if err := c.Write(line); err != nil {
		return err
	}
	return c.Writef("%s OK SEARCH done\r\n", cmd.Tag)
}

// Wanted returns the messages a UID FETCH asks for, in folder order, with
// their sequence numbers; CHANGEDSINCE is honoured.
func (h *HostileIMAP) Wanted(cmd IMAPCommand) (seqs []int, msgs []HostileMessage) {
	set, rest, _ := strings.Cut(cmd.Args, " ")
	maxUID := uint32(0)
	for _, m := range h.Messages {
		maxUID = max(maxUID, m.UID)
	}
	var since uint64
	if _, after, ok := strings.Cut(strings.ToUpper(rest), "CHANGEDSINCE "); ok {
		num, _, _ := strings.Cut(after, ")")
		since, _ = strconv.ParseUint(strings.TrimSpace(num), 10, 64)
	}
	for i, m := range h.Messages {
		if inUIDSet(set, m.UID, maxUID) && (since == 0 || m.ModSeq > since) {
			seqs = append(seqs, i+1)
			msgs = append(msgs, m)
		}
	}
	return seqs, msgs
}

// FetchResponse is the untagged FETCH response for m, with the items a
// command asked for (its arguments).
func FetchResponse(seq int, m HostileMessage, args string) string {
	up := strings.ToUpper(args)
	var items []string
	items = append(items, fmt.Sprintf("UID %d", m.UID))
	if strings.Contains(up, "FLAGS") {
		items = append(items, fmt.Sprintf("FLAGS (%s)", m.Flags))
	}
	if strings.Contains(up, "INTERNALDATE") {
		items = append(items, `INTERNALDATE "01-Jan-2025 10:00:00 +0000"`)
	}
	if strings.Contains(up, "RFC822.SIZE") {
		items = append(items, fmt.Sprintf("RFC822.SIZE %d", len(m.Body)))
	}
	if strings.Contains(up, "MODSEQ") {
		items = append(items, fmt.Sprintf("MODSEQ (%d)", max(m.ModSeq, 1)))
	}
	if strings.Contains(up, "BODY.PEEK[]") || strings.Contains(up, "BODY[]") {
		items = append(items, fmt.Sprintf("BODY[] {%d}\r\n%s", len(m.Body), m.Body))
	}
	return fmt.Sprintf("* %d FETCH (%s)\r\n", seq, strings.Join(items, " "))
}

func (h *HostileIMAP) fetch(c *HostileConn, cmd IMAPCommand) error {
	seqs, msgs := h.Wanted(cmd)
	_, rest, _ := strings.Cut(cmd.Args, " ")
	for i, m := range msgs {
		if err := c.Write(FetchResponse(seqs[i], m, rest)); err != nil {
			return err
		}
	}
	return c.Writef("%s OK FETCH done\r\n", cmd.Tag)
}

// inUIDSet reports whether uid is in an IMAP sequence set such as
// "1:3,7,9:*"; "*" is maxUID.
func inUIDSet(set string, uid, maxUID uint32) bool {
	num := func(s string) uint32 {
		if s == "*" {
			return maxUID
		}
		v, _ := strconv.ParseUint(s, 10, 32)
		return uint32(v)
	}
	for part := range strings.SplitSeq(set, ",") {
		lo, hi, isRange := strings.Cut(part, ":")
		a := num(lo)
		b := a
		if isRange {
			b = num(hi)
		}
		if a > b {
			a, b = b, a
		}
		if uid >= a && uid <= b {
			return true
		}
	}
	return false
}

// splitLogin returns LOGIN's two arguments, unquoted.
func splitLogin(args string) (user, pass string) {
	var out []string
	for len(args) > 0 && len(out) < 2 {
		args = strings.TrimLeft(args, " ")
		if strings.HasPrefix(args, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(args) && args[i] != '"'; i++ {
				if args[i] == '\\' && i+1 < len(args) {
					i++
				}
				b.WriteByte(args[i])
			}
			out = append(out, b.String())
			args = args[min(i+1, len(args)):]
			continue
		}
		word, rest, _ := strings.Cut(args, " ")
		out = append(out, word)
		args = rest
	}
	out = append(out, "", "")
	return out[0], out[1]
}

// HostileMessages makes n small valid messages with UIDs 1..n.
func HostileMessages(n int) []HostileMessage {
	out := make([]HostileMessage, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, HostileMessage{UID: uint32(i), ModSeq: uint64(i), Body: fmt.Sprintf(
			"From: a@example.org\r\nTo: b@example.org\r\nSubject: message %d\r\nMessage-ID: <m%d@example.org>\r\nDate: Wed, 01 Jan 2025 10:00:00 +0000\r\n\r\nbody %d\r\n", i, i, i)})
	}
	return out
}

// HasCommand reports whether the clients sent a command named name (upper
// case, e.g. "LOGIN") in any line recorded so far; tls selects lines sent
// under TLS or in clear text.
func (p *HostilePeer) HasCommand(name string, tls bool) bool {
	return slices.ContainsFunc(p.Lines(), func(l HostileLine) bool {
		if l.TLS != tls {
			return false
		}
		_, rest, _ := strings.Cut(l.Text, " ")
		return strings.HasPrefix(strings.ToUpper(rest), name)
	})
}
