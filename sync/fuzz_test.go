package imapsync

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/emersion/go-imap/v2"
)

// FuzzMessageRecord drives the mapping from what an IMAP server sends (a
// message's raw bytes and its flags) to the stored row and to the API's
// message view, as the fetch workers and the message route run it.
// Invariants:
//   - nothing panics, and a go-message panic is not hiding behind
//     parseMessage's recover;
//   - every text column of the row is valid UTF-8 without NUL (PostgreSQL
//     refuses both), within its bound: subject and message ids 4 KiB,
//     references 8 KiB, the snippet 200 characters, at most 100 addresses
//     per header and 100 attachment names; subject, names and snippet are
//     one line;
//   - the sent date fits both dialects (years 1 to 9999, UTC);
//   - the stored raw bytes are the message as received, and parsing does
//     not change the caller's bytes;
//   - the view's headers, text and attachment names are valid UTF-8 (and
//     headers and names without NUL).
func FuzzMessageRecord(f *testing.F) {
	seeds := []struct{ msg, flags string }{
		{"From: =?UTF-8?Q?J=C3=B6rg?= <j@example.org>\r\nSubject: =?UTF-8?B?0J/RgNC40LLQtdGC?=\r\nMessage-ID: <a@b>\r\n\r\nHello\r\n  world\r\n", `\Seen $Label1`},
		{"Subject: =?windows-1251?B?z/Do4uXy?=\r\nContent-Type: text/plain; charset=koi8-r\r\n\r\n\xf0\xd2\xc9\xd7\xc5\xd4\r\n", `\Answered \Recent`},
		{"Content-Type: text/html\r\n\r\n<html><head><style>p{}</style></head><body><p>Caf&eacute; &amp; more</p><script>x()</script></body></html>", ""},
		{"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nBody text\r\n--b\r\nContent-Disposition: attachment; filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82.pdf\r\n\r\nx\r\n--b\r\nContent-Type: image/png; name=\"pic.png\"\r\n\r\nx\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner\r\n--b--\r\n", `\Flagged`},
		{"In-Reply-To: <p@x>\r\nReferences: <a@x>\r\n <p@x>\r\n\r\nx", ""},
		{"Subject: plain\r\nContent-Type: text/plain; charset=x-unknown-42\r\n\r\nbody", ""},
		{"this line is no header\r\nSubject: broken\r\n\r\nbody\r\n", ""},
		{"Subject: s\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\nno parts at all", ""},
		{"Subject: =?UTF-8?Q?a=00b=0D=0AX-Injected:_1?=\r\nFrom: =?UTF-8?B?AAA=?= <a\x00@example.org>\r\nTo: \"\xff\xfe\" <b@example.org>\r\n\r\n\x00\xff", "\xff \\Seen"},
		{"Date: Mon, 1 Jan 0000 00:00:00 +0100\r\nSubject: year zero\r\n\r\n", ""},
		{"Date: Fri, 31 Dec 9999 23:59:59 -2359\r\n\r\n", ""},
		{"Content-Type: text/plain; charset=utf-16\r\nContent-Transfer-Encoding: base64\r\n\r\n//5IAGkA\r\n", ""},
		{"Content-Type: multipart/alternative; boundary=\"a\"\r\n\r\n--a\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=D0=9F=D1=80=D0=B8=\r\n=D0=B2=D0=B5=D1=82 =\r\n--a\r\nContent-Type: text/html; charset=\"iso-8859-1\"\r\n\r\n<p>caf\xe9</p>\r\n--a--\r\n", ""},
		{"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: multipart/mixed; boundary=i\r\n\r\n--i\r\nContent-Disposition: attachment; filename=\"=?utf-8?q?a=0Ab.txt?=\"\r\n\r\nx\r\n--i--\r\n--o--\r\n", ""},
		{"Message-ID: " + strings.Repeat("<x@y> ", 2000) + "\r\nReferences: " + strings.Repeat("<r@y> ", 3000) + "\r\nTo: " + strings.Repeat("a@b, ", 300) + "c@d\r\n\r\n", ""},
	}
	for _, s := range seeds {
		f.Add([]byte(s.msg), s.flags)
	}
	f.Fuzz(func(t *testing.T, raw []byte, flagText string) {
		var flags []imap.Flag
		for _, fl := range strings.Fields(flagText) {
			flags = append(flags, imap.Flag(fl))
		}
		orig := bytes.Clone(raw)
		m := &fetched{body: raw}
		m.row.Flags = flagString(flags)
		(&folderSync{}).compress(m, nil)
		if !bytes.Equal(raw, orig) {
			t.Fatalf("parsing changed the caller's bytes")
		}
		checkText(t, "flags", m.row.Flags, 0, false)
		if m.failed != nil {
			if strings.Contains(m.failed.Error(), "panic:") {
				t.Fatalf("go-message panicked: %v", m.failed)
			}
			return
		}
		r := m.row
		zr, err := openRaw(r.RawCodec, r.Raw)
		if err != nil {
			t.Fatalf("raw (%s) does not open: %v", r.RawCodec, err)
		}
		if back, err := io.ReadAll(zr); err != nil || !bytes.Equal(back, orig) {
			t.Fatalf("raw does not read back as the message (%v)", err)
		}
		checkText(t, "message_id", r.MessageID, maxHeaderText, false)
		checkText(t, "in_reply_to", r.InReplyTo, maxHeaderText, false)
		checkText(t, "refs", r.Refs, maxRefsText, false)
		checkText(t, "subject", r.Subject, maxHeaderText, true)
		checkText(t, "snippet", r.Snippet, 4*snippetRunes, true)
		if n := utf8.RuneCountInString(r.Snippet); n > snippetRunes {
			t.Fatalf("snippet has %d characters, want at most %d", n, snippetRunes)
		}
		if r.SentAt != nil && (r.SentAt.Year() < 1 || r.SentAt.Year() > 9999 || r.SentAt.Location().String() != "UTC") {
			t.Fatalf("sent_at = %v, want a UTC time in years 1 to 9999", r.SentAt)
		}
		for col, js := range map[string]string{"from_addr": r.FromAddr, "to_addr": r.ToAddr, "cc_addr": r.CcAddr} {
			checkText(t, col, js, 0, false)
			var list []Address
			if err := json.Unmarshal([]byte(js), &list); err != nil {
				t.Fatalf("%s = %q is not a JSON address list: %v", col, js, err)
			}
			if len(list) > maxAddresses {
				t.Fatalf("%s holds %d addresses, want at most %d", col, len(list), maxAddresses)
			}
			for _, a := range list {
				checkText(t, col+" name", a.Name, maxHeaderText, true)
				checkText(t, col+" email", a.Email, maxHeaderText, false)
			}
		}
		checkText(t, "attachments", r.Attachments, 0, false)
		var names []string
		if err := json.Unmarshal([]byte(r.Attachments), &names); err != nil {
			t.Fatalf("attachments = %q is not a JSON list: %v", r.Attachments, err)
		}
		if len(names) > maxAttachments {
			t.Fatalf("%d attachment names, want at most %d", len(names), maxAttachments)
		}
		for _, n := range names {
			checkText(t, "attachment name", n, maxHeaderText, true)
		}

		v, err := buildView(bytes.NewReader(orig))
		if err != nil {
			return
		}
		for _, h := range v.Headers {
			checkText(t, "view header name", h.Name, 0, false)
			checkText(t, "view header "+h.Name, h.Value, 0, true)
		}
		// Text and HTML go out as JSON only, where NUL is escaped.
		if !utf8.ValidString(v.Text) || !utf8.ValidString(v.HTML) {
			t.Fatalf("view text %q or HTML %q is not valid UTF-8", v.Text, v.HTML)
		}
		for _, a := range v.Attachments {
			checkText(t, "view attachment", a.Name, 0, true)
		}
	})
}

// checkText fails unless s is valid UTF-8 without NUL, at most max bytes
// (0: no bound) and, when oneLine, without CR or LF.
func checkText(t *testing.T, what, s string, max int, oneLine bool) {
	t.Helper()
	switch {
	case !utf8.ValidString(s):
		t.Fatalf("%s = %q is not valid UTF-8", what, s)
	case strings.IndexByte(s, 0) >= 0:
		t.Fatalf("%s = %q contains NUL", what, s)
	case max > 0 && len(s) > max:
		t.Fatalf("%s is %d bytes, want at most %d", what, len(s), max)
	case oneLine && strings.ContainsAny(s, "\r\n"):
		t.Fatalf("%s = %q is not one line", what, s)
	}
}
