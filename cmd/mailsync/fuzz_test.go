package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/mail"
	"slices"
	"strings"
	"testing"
)

// FuzzSendmailInput drives what "mailsync sendmail" makes of its command
// line, its configured from and the message on standard input, up to the
// request it would send. args holds the arguments separated by NUL, which
// no argument can contain. Invariants:
//   - nothing panics; a refusal is a *sendmailFail with a sysexits code;
//   - every recipient and the envelope sender are bare addresses without
//     CR, LF, NUL or a comma that read back as themselves;
//   - the message sent is the header as read (with at most one From added
//     or replaced, on one line) followed by the body byte for byte, cut at
//     the first lone dot without -i; no other field is added or dropped.
func FuzzSendmailInput(f *testing.F) {
	seeds := []struct {
		args, cfgFrom, msg string
	}{
		{"-t\x00-i", "", "From: site@example.com\nTo: Rcpt <rcpt@example.org>\nBcc: hidden@example.org\nSubject: s\n\nline one\n.\nline three\n"},
		{"rcpt@example.org", "", "From: site@example.com\r\nSubject: dot\r\n\r\nbefore\r\n.\r\nafter\r\n"},
		{"-FCronDaemon\x00-i\x00-B8BITMIME\x00-oem\x00ops@example.com", "cron@example.com", "From: root (Cron Daemon)\nTo: ops@example.com\nSubject: Cron <root@host> job\n\noutput\n"},
		{"-oi\x00-f\x00<u@example.com>\x00-t", "", "To: a@example.org, \"B\" <b@example.org>\nCc: undisclosed-recipients:;\n\nbody"},
		{"-t", "", "To: \"x@evil.example,y\"@example.com\n\nsmuggled"},
		{"-f\x00x@y.example\r\nBcc: evil@example.net\x00r@example.org", "", "Subject: injected -f\n\nx\n"},
		{"-F\x00Name\r\nBcc: evil@example.net\x00-f\x00s@example.com\x00r@example.org", "", "Subject: injected -F\n\nx\n"},
		{"a@b.c,d@e.f\x00--\x00-x@y.z", "", "Subject: s\n \tfolded\n\n..dot-stuffed\n.\n"},
		{"-t", "", "To: a@example.org\n\tb@example.org\nX: y\n\n\n\r\n.\r\n"},
		{"-t\x00-i", "", "To: r@example.org"},
		{"r@example.org", "site@example.com", "not a header line\n\nbody\n"},
		{"r@example.org", "", ".\nnever read\n"},
		{"-t", "", "To: =?utf-8?q?a=0D=0A?= <a@example.org>\n\nx"},
		{"r@example.org", "", "To: r@example.org\r\n\r\nlong " + strings.Repeat("x", 70000) + "\r\n.\r\n"},
		{"-q15m", "", ""},
		{"-bs", "", ""},
	}
	for _, s := range seeds {
		f.Add(s.args, s.cfgFrom, []byte(s.msg))
	}
	f.Fuzz(func(t *testing.T, argText, cfgFrom string, msg []byte) {
		var args []string
		if argText != "" {
			args = strings.Split(argText, "\x00")
		}
		a, err := parseSendmailArgs(args)
		if err != nil || a.help || a.queueRun {
			return
		}
		sub, err := prepareSubmission(a, cfgFrom, bufio.NewReaderSize(bytes.NewReader(msg), 64<<10))
		if err != nil {
			var sf *sendmailFail
			if !errors.As(err, &sf) || sf.code == exOK {
				t.Fatalf("prepareSubmission() error = %#v, want a *sendmailFail with an exit code", err)
			}
			return
		}
		out, err := io.ReadAll(sub.msg)
		if err != nil {
			t.Fatalf("reading the message to send: %v", err)
		}

		addrs := append([]string{sub.envFrom}, sub.rcpts...)
		for i, r := range addrs {
			if i == 0 && r == "" {
				continue
			}
			if strings.ContainsAny(r, "\r\n\x00,") {
				t.Fatalf("address %q contains CR, LF, NUL or a comma", r)
			}
			p, err := mail.ParseAddress(r)
			if err != nil || p.Name != "" || p.Address != r {
				t.Fatalf("address %q is not a bare address (parsed as %v, %v)", r, p, err)
			}
		}
		if !a.readRcpts && len(sub.rcpts) != len(a.rcpts) {
			t.Fatalf("without -t: %d recipients from %d arguments", len(sub.rcpts), len(a.rcpts))
		}
		if len(sub.rcpts) == 0 {
			t.Fatalf("no recipients, yet no refusal")
		}

		inHead, body, ok := modelSplit(msg, a.ignoreDots)
		if !ok {
			t.Fatalf("accepted a message the model says fails (header line over the buffer)")
		}
		if !bytes.HasSuffix(out, body) {
			t.Fatalf("the body is not preserved:\n got %q\nwant it to end with %q", out, body)
		}
		outHead := out[:len(out)-len(body)]
		left := map[string]int{}
		for _, f := range fieldsOf(outHead) {
			left[f]++
		}
		for _, f := range fieldsOf(inHead) {
			if left[f] > 0 {
				left[f]--
				continue
			}
			if name, _, _ := strings.Cut(f, ":"); !strings.EqualFold(strings.TrimSpace(name), "From") {
				t.Fatalf("the header lost the field %q", f)
			}
		}
		var added []string
		for f, n := range left {
			for range n {
				added = append(added, f)
			}
		}
		switch {
		case len(added) > 1:
			t.Fatalf("the header gained %d fields %q, want at most one From", len(added), added)
		case len(added) == 1:
			from := added[0]
			if !strings.HasPrefix(from, "From: ") || !strings.HasSuffix(from, "\r\n") ||
				strings.ContainsAny(strings.TrimSuffix(from, "\r\n"), "\r\n\x00") {
				t.Fatalf("added field %q, want one From line", from)
			}
			if _, err := mail.ParseAddress(strings.TrimSuffix(strings.TrimPrefix(from, "From: "), "\r\n")); err != nil {
				t.Fatalf("added From %q does not parse: %v", from, err)
			}
		}
	})
}

// modelSplit is an independent reading of a sendmail message: the header
// block (with its empty line) and the body that follows, cut at the first
// lone dot unless ignoreDots. ok is false when a line is longer than the
// 64 KiB reader and the header would be refused.
func modelSplit(msg []byte, ignoreDots bool) (head, body []byte, ok bool) {
	lines := bytes.SplitAfter(msg, []byte("\n"))
	if len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	lone := func(l []byte) bool {
		return !ignoreDots && (string(l) == "." || string(l) == ".\n" || string(l) == ".\r\n")
	}
	i := 0
	for ; i < len(lines); i++ {
		l := lines[i]
		if len(l) > 64<<10 || (len(l) == 64<<10 && l[len(l)-1] != '\n') {
			return nil, nil, false
		}
		if lone(l) {
			return msg[:lenOf(lines[:i])], nil, true
		}
		if len(bytes.TrimRight(l, "\r\n")) == 0 {
			i++
			break
		}
	}
	head = msg[:lenOf(lines[:i])]
	var b bytes.Buffer
	for _, l := range lines[i:] {
		if lone(l) {
			break
		}
		b.Write(l)
	}
	return head, b.Bytes(), true
}

func lenOf(lines [][]byte) int {
	n := 0
	for _, l := range lines {
		n += len(l)
	}
	return n
}

// fieldsOf splits a header block into its fields, continuation lines
// included, with line endings as they are; a final line without one gets
// "\n", as sendmail completes it.
func fieldsOf(head []byte) []string {
	var fields [][]byte
	for _, l := range bytes.SplitAfter(head, []byte("\n")) {
		switch {
		case len(l) == 0 || len(bytes.TrimRight(l, "\r\n")) == 0:
			continue
		case !bytes.HasSuffix(l, []byte("\n")):
			l = append(l, '\n')
		}
		if (l[0] == ' ' || l[0] == '\t') && len(fields) > 0 {
			fields[len(fields)-1] = append(fields[len(fields)-1], l...)
			continue
		}
		fields = append(fields, slices.Clone(l))
	}
	out := make([]string, len(fields))
	for i, f := range fields {
		out[i] = string(f)
	}
	return out
}

// sendmail passes on only bare addresses that read back as themselves: a
// quoted local part with a comma would become two recipients at the
// service, which splits rcpt at commas.
func TestSendmailAddresses(t *testing.T) {
	cases := []struct {
		args, cfgFrom, msg string
		code               int // 0: accepted
		rcpts              []string
		envFrom            string
	}{
		{"-t", "", "To: \"x@evil.example,y\"@example.com\n\nx\n", exDataErr, nil, ""},
		{"-t", "", "To: \"a b\"@example.com\n\nx\n", exDataErr, nil, ""},
		{"\"x@evil.example,y\"@example.com", "", "Subject: s\n\nx\n", exUsage, nil, ""},
		{"root", "", "Subject: s\n\nx\n", exUsage, nil, ""},
		{"-f\x00x@y.example\r\nBcc: e@example.net\x00r@example.org", "", "Subject: s\n\nx\n", exUsage, nil, ""},
		{"r@example.org", "not an address", "Subject: s\n\nx\n", exConfig, nil, ""},
		{"-t\x00-f\x00<s@example.com>\x00Ann <a@example.org>", "",
			"To: B <b@example.org>, c@example.org\nCc: d@example.org (D)\n\nx\n", 0,
			[]string{"a@example.org", "b@example.org", "c@example.org", "d@example.org"}, "s@example.com"},
		{"-f\x00root\x00r@example.org", "", "Subject: s\n\nx\n", 0, []string{"r@example.org"}, ""},
	}
	for _, c := range cases {
		a, err := parseSendmailArgs(strings.Split(c.args, "\x00"))
		if err != nil {
			t.Fatalf("parseSendmailArgs(%q) = %v", c.args, err)
		}
		sub, err := prepareSubmission(a, c.cfgFrom, bufio.NewReader(strings.NewReader(c.msg)))
		var sf *sendmailFail
		switch {
		case c.code != 0 && (!errors.As(err, &sf) || sf.code != c.code):
			t.Errorf("prepareSubmission(%q, %q) error = %v, want exit %d", c.args, c.msg, err, c.code)
		case c.code == 0 && err != nil:
			t.Errorf("prepareSubmission(%q, %q) error = %v", c.args, c.msg, err)
		case c.code == 0 && (!slices.Equal(sub.rcpts, c.rcpts) || sub.envFrom != c.envFrom):
			t.Errorf("prepareSubmission(%q, %q) = %v from %q, want %v from %q", c.args, c.msg, sub.rcpts, sub.envFrom, c.rcpts, c.envFrom)
		}
	}
}
