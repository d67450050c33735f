package imapsync

import (
	"errors"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
)

func TestParseMessage(t *testing.T) {
	tests := []struct {
		name        string
		msg         string
		subject     string
		from        string
		snippet     string
		attachments string
		refs        string
		err         error
	}{
		{
			name:    "plain, encoded subject and name",
			msg:     "From: =?UTF-8?Q?J=C3=B6rg?= <j@example.org>\r\nSubject: =?UTF-8?B?0J/RgNC40LLQtdGC?=\r\nMessage-ID: <a@b>\r\n\r\nHello\r\n  world\r\n",
			subject: "Привет", from: "Jörg <j@example.org>", snippet: "Hello world",
		},
		{
			name:    "KOI8-R body, windows-1251 subject",
			msg:     "Subject: =?windows-1251?B?z/Do4uXy?=\r\nContent-Type: text/plain; charset=koi8-r\r\n\r\n\xf0\xd2\xc9\xd7\xc5\xd4\r\n",
			subject: "Привет", snippet: "Привет",
		},
		{
			name:    "HTML only: tags, styles and entities go",
			msg:     "Content-Type: text/html\r\n\r\n<html><head><style>p{}</style></head><body><p>Caf&eacute; &amp; more</p><script>x()</script></body></html>",
			snippet: "Café & more",
		},
		{
			name:        "attachments: RFC 2231 name, name in Content-Type, message/rfc822",
			msg:         "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nBody text\r\n--b\r\nContent-Disposition: attachment; filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82.pdf\r\n\r\nx\r\n--b\r\nContent-Type: image/png; name=\"pic.png\"\r\n\r\nx\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner\r\n--b--\r\n",
			snippet:     "Body text",
			attachments: "отчёт.pdf|pic.png|message.eml",
		},
		{
			name: "references and in-reply-to",
			msg:  "In-Reply-To: <p@x>\r\nReferences: <a@x>\r\n <p@x>\r\n\r\nx",
			refs: "a@x p@x", snippet: "x",
		},
		{
			name:    "unknown charset is kept, not fatal",
			msg:     "Subject: plain\r\nContent-Type: text/plain; charset=x-unknown-42\r\n\r\nbody",
			subject: "plain", snippet: "body",
		},
		{
			name: "a header line without a colon fails",
			msg:  "this line is no header\r\nSubject: broken\r\n\r\nbody\r\n",
			err:  ErrParse,
		},
		{
			name:    "broken multipart keeps what was read",
			msg:     "Subject: s\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\nno parts at all",
			subject: "s",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := parseMessage(strings.NewReader(tt.msg))
			if !errors.Is(err, tt.err) {
				t.Fatalf("parseMessage() error = %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if p.Subject != tt.subject {
				t.Errorf("Subject = %q, want %q", p.Subject, tt.subject)
			}
			if tt.from != "" && (len(p.From) != 1 || p.From[0].Name+" <"+p.From[0].Email+">" != tt.from) {
				t.Errorf("From = %+v, want %s", p.From, tt.from)
			}
			if p.Snippet != tt.snippet {
				t.Errorf("Snippet = %q, want %q", p.Snippet, tt.snippet)
			}
			if got := strings.Join(p.Attachments, "|"); got != tt.attachments {
				t.Errorf("Attachments = %q, want %q", got, tt.attachments)
			}
			if p.Refs != tt.refs {
				t.Errorf("Refs = %q, want %q", p.Refs, tt.refs)
			}
		})
	}
}

func TestFlagString(t *testing.T) {
	got := flagString([]imap.Flag{imap.FlagSeen, `\Recent`, "$Label1", imap.FlagSeen, imap.FlagAnswered})
	if want := `$Label1 \Answered \Seen`; got != want {
		t.Errorf("flagString() = %q, want %q (sorted, deduplicated, no \\Recent)", got, want)
	}
}

func TestClean(t *testing.T) {
	if got := clean("a\x00b\xffc", 0); got != "ab\uFFFDc" {
		t.Errorf("clean() = %q", got)
	}
	if got := clean("жжж", 5); got != "жж" {
		t.Errorf("clean() cut = %q, want a whole rune", got)
	}
}

func TestMinus(t *testing.T) {
	got := minus([]uint32{1, 2, 3, 5, 8}, []uint32{2, 4, 5, 9})
	if want := []uint32{1, 3, 8}; len(got) != len(want) || got[0] != 1 || got[1] != 3 || got[2] != 8 {
		t.Errorf("minus() = %v, want %v", got, want)
	}
}
