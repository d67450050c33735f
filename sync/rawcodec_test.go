package imapsync

import (
	"bytes"
	"compress/gzip"
	"context"
	"html"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
)

// randomBase64 is n bytes of base64 lines of random data: an attachment.
func randomBase64(r *rand.Rand, n int) []byte {
	const enc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	var b bytes.Buffer
	for b.Len() < n {
		for range 76 {
			b.WriteByte(enc[r.IntN(64)])
		}
		b.WriteString("\r\n")
	}
	return b.Bytes()[:n]
}

func TestRawEncoder(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	text := []byte("Subject: numbers\r\n\r\n" + strings.Repeat("the report for march shows revenue growth of twelve percent\r\n", 400))
	attachment := append([]byte("Subject: scan\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"), randomBase64(r, 300<<10)...)
	huge := append([]byte("Subject: huge\r\n\r\n"), randomBase64(r, keepScratch+1)...)
	tests := []struct {
		name  string
		body  []byte
		codec string
	}{
		{"empty", []byte{}, codecNone},
		{"one header", []byte("Subject: x\r\n\r\n"), codecNone},
		{"text shrinks", text, codecS2},
		{"base64 attachment does not", attachment, codecNone},
		{"larger than the kept scratch", huge, codecNone},
		{"large text", bytes.Repeat(text, 100), codecS2},
	}
	var enc rawEncoder
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := bytes.Clone(tt.body)
			raw, codec := enc.encode(tt.body)
			if codec != tt.codec {
				t.Errorf("encode() codec = %q, want %q (%d of %d bytes)", codec, tt.codec, len(raw), len(tt.body))
			}
			if codec == codecNone && len(raw) > 0 && &raw[0] != &tt.body[0] {
				t.Error("encode() copied bytes it stores as they are")
			}
			if codec == codecS2 && len(raw) > len(tt.body)-len(tt.body)/8 {
				t.Errorf("encode() = %d bytes of %d with s2, want at most 7/8", len(raw), len(tt.body))
			}
			if !bytes.Equal(tt.body, orig) {
				t.Error("encode() changed its input")
			}
			if cap(enc.scratch) > keepScratch {
				t.Errorf("encoder keeps %d bytes of scratch, want at most %d", cap(enc.scratch), keepScratch)
			}
			rc, err := openRaw(codec, raw)
			if err != nil {
				t.Fatalf("openRaw() = %v", err)
			}
			back, err := io.ReadAll(rc)
			if err != nil || !bytes.Equal(back, orig) {
				t.Errorf("openRaw() reads %d bytes (%v), want the %d bytes encoded", len(back), err, len(orig))
			}
		})
	}
	if _, err := openRaw("zstd", []byte("x")); err == nil {
		t.Error(`openRaw("zstd") = nil error, want one`)
	}
	if _, err := openRaw(codecS2, []byte{0xff, 0xff, 0xff, 0xff, 0x7f}); err == nil {
		t.Error("openRaw(s2, a block claiming 32 GiB) = nil error, want one")
	}
}

// TestStoredRawReadsBack stores a message under each codec — gzip as a
// row written before migration 7 left it, without raw_codec — and reads
// it back through RawMessage and Message, on both dialects.
func TestStoredRawReadsBack(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	msgs := map[string][]byte{
		codecGzip: []byte("Subject: old row\r\nContent-Type: text/plain\r\n\r\n" + strings.Repeat("stored before migration 7\r\n", 50)),
		codecS2:   []byte("Subject: text\r\nContent-Type: text/plain\r\n\r\n" + strings.Repeat("stored as S2\r\n", 500)),
		codecNone: append([]byte("Subject: attachment\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"), randomBase64(r, 100<<10)...),
	}
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		now := time.Now().UTC()
		mustExec := func(sql string, args ...any) {
			t.Helper()
			if err := db.Gorm.Exec(sql, args...).Error; err != nil {
				t.Fatal(err)
			}
		}
		mustExec("INSERT INTO users (id, email, name, admin, created_at) VALUES (1, 'owner@example.com', '', FALSE, ?)", now)
		mustExec(`INSERT INTO mailboxes (id, user_id, email, imap_host, imap_port, imap_security, imap_login, imap_password, created_at, updated_at)
			VALUES (1, 1, 'owner@example.com', 'localhost', 993, 'ssl', 'owner', '', ?, ?)`, now, now)
		mustExec("INSERT INTO mailbox_folders (id, mailbox_id, name, selected, uidvalidity, created_at) VALUES (1, 1, 'INBOX', TRUE, 7, ?)", now)
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		_, _ = zw.Write(msgs[codecGzip])
		_ = zw.Close()
		mustExec(`INSERT INTO messages (id, mailbox_id, folder_id, uidvalidity, uid, internal_date, size, created_at, raw)
			VALUES (1, 1, 1, 7, 1, ?, ?, ?, ?)`, now, len(msgs[codecGzip]), now, gz.Bytes())
		var enc rawEncoder
		for i, codec := range []string{codecS2, codecNone} {
			raw, got := enc.encode(msgs[codec])
			if got != codec {
				t.Fatalf("encode(%s message) codec = %q", codec, got)
			}
			mustExec(`INSERT INTO messages (id, mailbox_id, folder_id, uidvalidity, uid, internal_date, size, created_at, raw_codec, raw)
				VALUES (?, 1, 1, 7, ?, ?, ?, ?, ?, ?)`, i+2, i+2, now, len(msgs[codec]), now, codec, raw)
		}
		e := New(Deps{DB: db}, Config{})
		for id, codec := range []string{codecGzip, codecS2, codecNone} {
			rc, size, err := e.RawMessage(ctx, 1, int64(id+1))
			if err != nil {
				t.Fatalf("RawMessage(%s row) = %v", codec, err)
			}
			back, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(back, msgs[codec]) || size != int64(len(msgs[codec])) {
				t.Errorf("RawMessage(%s row) = %d bytes, size %d (%v), want the %d bytes stored", codec, len(back), size, err, len(msgs[codec]))
			}
			d, err := e.Message(ctx, 1, int64(id+1))
			if err != nil || len(d.Headers) == 0 || !strings.HasPrefix(d.Headers[0].Value, strings.Split(string(msgs[codec]), "\r\n")[0][len("Subject: "):]) {
				t.Errorf("Message(%s row) headers = %v (%v)", codec, d.Headers, err)
			}
		}
	})
}

// htmlToTextReference is htmlToText as it was before it copied text in
// runs: lower-casing the whole input and stepping rune by rune.
func htmlToTextReference(s string) string {
	var b strings.Builder
	lower := strings.ToLower(s)
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(lower[i:], "<!--"):
			end := strings.Index(lower[i+4:], "-->")
			if end < 0 {
				return html.UnescapeString(b.String())
			}
			i += 4 + end + 3
		case strings.HasPrefix(lower[i:], "<script"), strings.HasPrefix(lower[i:], "<style"), strings.HasPrefix(lower[i:], "<head"):
			tag := "</script"
			if strings.HasPrefix(lower[i:], "<style") {
				tag = "</style"
			} else if strings.HasPrefix(lower[i:], "<head") {
				tag = "</head"
			}
			end := strings.Index(lower[i:], tag)
			if end < 0 {
				return html.UnescapeString(b.String())
			}
			i += end + len(tag)
			if gt := strings.IndexByte(s[i:], '>'); gt >= 0 {
				i += gt + 1
			}
		case s[i] == '<':
			gt := strings.IndexByte(s[i:], '>')
			if gt < 0 {
				return html.UnescapeString(b.String())
			}
			b.WriteByte(' ')
			i += gt + 1
		default:
			r, size := utf8.DecodeRuneInString(s[i:])
			b.WriteRune(r)
			i += size
		}
	}
	return html.UnescapeString(b.String())
}

// TestHTMLToTextMatchesReference compares htmlToText with the reference
// on pieces of HTML put together at random (ASCII and two-byte letters
// only, where lower-casing keeps every byte's place).
func TestHTMLToTextMatchesReference(t *testing.T) {
	pieces := []string{"<p>", "</P>", "text ", "Café ", "Привет ", "&amp;", "&eacute;", "&#x41;", "<!-- c -->", "<!--", "-->",
		"<SCRIPT>x()</script>", "<script>", "</SCRIPT>", "<Style>p{}</STYLE>", "<style>", "<head><title>t</title></head>",
		"<header>h</header>", "<HEAD>", "</Head>", "<", ">", "<br/>", "<a href='x'>link</a>", " \r\n\t", "<scr", "ipt>"}
	r := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		var b strings.Builder
		for range r.IntN(12) {
			b.WriteString(pieces[r.IntN(len(pieces))])
		}
		s := b.String()
		if got, want := htmlToText(s), htmlToTextReference(s); got != want {
			t.Fatalf("htmlToText(%q) = %q, want %q", s, got, want)
		}
	}
}
