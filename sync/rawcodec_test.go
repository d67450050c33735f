package imapsync

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
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

// randomText is n bytes of printable ASCII lines with spaces at random:
// text S2 cannot shrink and that holds no base64 run.
func randomText(r *rand.Rand, n int) []byte {
	b := make([]byte, 0, n+2)
	for len(b) < n {
		if len(b)%72 == 70 {
			b = append(b, "\r\n"...)
			continue
		}
		b = append(b, byte(' '+r.IntN(95)))
	}
	return b[:n]
}

func TestRawEncoder(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	text := []byte("Subject: numbers\r\n\r\n" + strings.Repeat("the report for march shows revenue growth of twelve percent\r\n", 400))
	attachment := append([]byte("Subject: scan\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"), randomBase64(r, 300<<10)...)
	huge := append([]byte("Subject: huge\r\n\r\n"), randomBase64(r, keepScratch+1)...)
	noise := append([]byte("Subject: noise\r\n\r\n"), randomText(r, 64<<10)...)
	// 3 KiB of base64 in 30 KiB: too small a share to change the codec.
	smallPart := append(bytes.Repeat(text, 2), randomBase64(r, 3<<10)...)
	// HTML sent as base64, as some mailers do: S2 shrinks it decoded.
	htmlPart := []byte("Subject: news\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		wrapBase64(bytes.Repeat([]byte("<tr><td class=\"item\">Quarterly figures</td><td>12.5%</td></tr>\r\n"), 500), 76, "\r\n"))
	tests := []struct {
		name    string
		body    []byte
		codec   string
		maxSize float64 // of the message's length
	}{
		{"empty", []byte{}, codecNone, 1},
		{"one header", []byte("Subject: x\r\n\r\n"), codecNone, 1},
		{"text shrinks", text, codecS2, 0.875},
		{"base64 attachment stored decoded", attachment, codecB64, 0.76},
		{"larger than the kept scratch", huge, codecB64, 0.76},
		{"large text", bytes.Repeat(text, 100), codecS2, 0.875},
		{"incompressible text", noise, codecNone, 1},
		{"small base64 part in text", smallPart, codecS2, 0.875},
		{"base64 HTML", htmlPart, codecB64, 0.1},
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
			if float64(len(raw)) > tt.maxSize*float64(len(tt.body)) {
				t.Errorf("encode() = %d bytes of %d with %s, want at most %.3f of them", len(raw), len(tt.body), codec, tt.maxSize)
			}
			if !bytes.Equal(tt.body, orig) {
				t.Error("encode() changed its input")
			}
			checkScratch(t, &enc)
			checkReadsBack(t, codec, raw, orig)
		})
	}
	if _, err := openRaw("zstd", []byte("x")); err == nil {
		t.Error(`openRaw("zstd") = nil error, want one`)
	}
	if _, err := openRaw(codecS2, []byte{0xff, 0xff, 0xff, 0xff, 0x7f}); err == nil {
		t.Error("openRaw(s2, a block claiming 32 GiB) = nil error, want one")
	}
}

// checkScratch fails t when enc keeps a scratch buffer past keepScratch.
func checkScratch(t *testing.T, enc *rawEncoder) {
	t.Helper()
	for name, n := range map[string]int{"scratch": cap(enc.scratch), "bin": cap(enc.bin), "packed": cap(enc.packed), "desc": cap(enc.desc)} {
		if n > keepScratch {
			t.Errorf("encoder keeps %d bytes of %s, want at most %d", n, name, keepScratch)
		}
	}
	if cap(enc.runs) > keepScratch/minRunText {
		t.Errorf("encoder keeps room for %d runs, want at most %d", cap(enc.runs), keepScratch/minRunText)
	}
}

// checkReadsBack fails t unless raw, stored with codec, reads back as want.
func checkReadsBack(t testing.TB, codec string, raw, want []byte) {
	t.Helper()
	rc, err := openRaw(codec, raw)
	if err != nil {
		t.Fatalf("openRaw(%s) = %v", codec, err)
	}
	back, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(back, want) {
		i := 0
		for i < len(back) && i < len(want) && back[i] == want[i] {
			i++
		}
		t.Fatalf("openRaw(%s) reads %d bytes (%v), want the %d bytes encoded; they differ from byte %d: %q, want %q",
			codec, len(back), err, len(want), i, back[i:min(len(back), i+40)], want[i:min(len(want), i+40)])
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
		codecNone: append([]byte("Subject: noise\r\nContent-Type: text/plain\r\n\r\n"), randomText(r, 20<<10)...),
		codecB64:  append([]byte("Subject: attachment\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"), randomBase64(r, 100<<10)...),
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
		for i, codec := range []string{codecS2, codecNone, codecB64} {
			raw, got := enc.encode(msgs[codec])
			if got != codec {
				t.Fatalf("encode(%s message) codec = %q", codec, got)
			}
			mustExec(`INSERT INTO messages (id, mailbox_id, folder_id, uidvalidity, uid, internal_date, size, created_at, raw_codec, raw)
				VALUES (?, 1, 1, 7, ?, ?, ?, ?, ?, ?)`, i+2, i+2, now, len(msgs[codec]), now, codec, raw)
		}
		e := New(Deps{DB: db}, Config{})
		for id, codec := range []string{codecGzip, codecS2, codecNone, codecB64} {
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

// benchMessages are the benchmark inputs: a message with a 300 KiB
// attachment and a 5 KiB text message.
func benchMessages() []struct {
	name string
	body []byte
} {
	r := rand.New(rand.NewPCG(11, 12))
	att := make([]byte, 300<<10)
	for i := range att {
		att[i] = byte(r.Uint32())
	}
	words := strings.Fields("the report for march shows revenue growth of twelve percent and our team will meet on friday to discuss budget plans customers orders shipping delays invoice attached please review before monday thanks regards")
	var text strings.Builder
	for line := 0; text.Len() < 5<<10; line++ {
		text.WriteString(words[r.IntN(len(words))])
		for text.Len()-line*2 < (line+1)*70 {
			text.WriteString(" " + words[r.IntN(len(words))])
		}
		text.WriteString("\r\n")
	}
	return []struct {
		name string
		body []byte
	}{
		{"attachment300k", []byte("Subject: scan\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
			wrapBase64(att, 76, "\r\n") + "--b--\r\n")},
		{"text5k", []byte("Subject: numbers\r\n\r\n" + text.String()[:5<<10])},
	}
}

// wrapBase64 is b in base64 lines of n characters, each ending with eol.
func wrapBase64(b []byte, n int, eol string) string {
	s := base64.StdEncoding.EncodeToString(b)
	var w strings.Builder
	for len(s) > n {
		w.WriteString(s[:n] + eol)
		s = s[n:]
	}
	if s != "" {
		w.WriteString(s + eol)
	}
	return w.String()
}

func BenchmarkRawEncode(b *testing.B) {
	for _, m := range benchMessages() {
		b.Run(m.name, func(b *testing.B) {
			var enc rawEncoder
			b.SetBytes(int64(len(m.body)))
			var raw []byte
			for b.Loop() {
				raw, _ = enc.encode(m.body)
			}
			b.ReportMetric(float64(len(raw))/float64(len(m.body)), "ratio")
		})
	}
}

func BenchmarkRawDecode(b *testing.B) {
	for _, m := range benchMessages() {
		b.Run(m.name, func(b *testing.B) {
			var enc rawEncoder
			raw, codec := enc.encode(m.body)
			b.SetBytes(int64(len(m.body)))
			for b.Loop() {
				rc, err := openRaw(codec, raw)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, rc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
