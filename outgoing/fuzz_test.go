package outgoing

import (
	"bytes"
	"errors"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
)

// FuzzBuildMessage: whatever the From name, subject, extra header and
// recipient, either the draft is refused as invalid input, or the built
// message has exactly the expected header fields, and no recipient carries
// CR, LF or NUL. Nothing a caller types becomes a new header or recipient.
func FuzzBuildMessage(f *testing.F) {
	seeds := [][4]string{
		{"Portal", "Hello", "tag", "a@example.org"},
		{"Evil\r\nBcc: v@example.org", "hi", "x", "a@example.org"},
		{"=?utf-8?q?Evil=0D=0ABcc:_v@example.org?=", "s", "x", "a@example.org"},
		{"", "=?utf-8?b?aGkNCkJjYzogdkBleGFtcGxlLm9yZw==?=", "x", "a@example.org"},
		{"Ünïcødé Näme", "Тема письма", "значение", "b@example.org"},
		{"\"quoted, name\"", "subj\x00", "v\r\nX-Evil: 1", "c@example.org\r\nRCPT TO:<v@example.org>"},
		{"a", strings.Repeat("long subject ", 40), "v", "\"x\ny\" <d@example.org>"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, name, subject, header, rcpt string) {
		from := (&mail.Address{Name: name, Address: "site@example.com"}).String()
		d := Draft{From: from, To: []string{rcpt}, Subject: subject, Text: "body\n.\nend",
			Headers: map[string]string{"X-Tag": header}}
		b, err := d.build(1<<20, Route{SenderName: "Fallback"}, time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC))
		if err != nil {
			if !errors.Is(err, apperr.ErrInvalid) {
				t.Fatalf("build() = %v, want nil or an invalid-input error", err)
			}
			return
		}
		for _, r := range b.recipients {
			if strings.ContainsAny(r, "\r\n\x00") {
				t.Fatalf("recipient %q carries a line break or NUL", r)
			}
		}
		msg, err := mail.ReadMessage(bytes.NewReader(b.raw))
		if err != nil {
			t.Fatalf("the built message does not parse: %v\n%s", err, b.raw)
		}
		allowed := map[string]bool{"From": true, "To": true, "Subject": true, "Message-Id": true, "Date": true,
			"Mime-Version": true, "Content-Type": true, "Content-Transfer-Encoding": true, "X-Tag": true}
		for k, vs := range msg.Header {
			if !allowed[k] || len(vs) != 1 {
				t.Fatalf("header %q (%d times) in the built message; input name %q subject %q header %q rcpt %q",
					k, len(vs), name, subject, header, rcpt)
			}
		}
		if bytes.Contains(bytes.ReplaceAll(b.raw, []byte("\r\n"), nil), []byte("\n")) {
			t.Fatalf("bare LF in the built message")
		}
	})
}

// FuzzExplain: the explainer never panics and always says something.
func FuzzExplain(f *testing.F) {
	f.Add("auth", 535, "5.7.8 Authentication credentials invalid", "")
	f.Add("auth", 534, "5.7.9 Application-specific password required", "")
	f.Add("auth", 535, "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled", "")
	f.Add("mail_from", 553, "5.7.1 Sender address rejected: not owned by user", "")
	f.Add("tls", 0, "", "x509: certificate is valid for other.example, not localhost")
	f.Add("ehlo", 0, "", "i/o timeout")
	f.Add("rcpt", 451, "", "")
	f.Add("", -1, "\x00\xff", "\xff")
	f.Fuzz(func(t *testing.T, step string, code int, text, cause string) {
		var reply *Reply
		if code != 0 || text != "" {
			reply = &Reply{Code: code, Text: text}
		}
		var err error
		if cause != "" {
			err = errors.New(cause)
		}
		for _, lang := range []string{"en", "ru"} {
			c, expl, _ := Explain(lang, Step(step), reply, err)
			if c == "" || expl == "" {
				t.Fatalf("Explain(%q, %v, %q) = code %q, explanation %q; want both", step, reply, cause, c, expl)
			}
		}
	})
}
