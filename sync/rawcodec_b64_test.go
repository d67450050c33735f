package imapsync

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"testing"
)

// randomBytes is n random bytes: compressed data, as attachments hold.
func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// msgPart is a piece of a test message; run marks base64 text the scan
// must find as a run of its own, whole.
type msgPart struct {
	b   string
	run bool
}

func litPart(s string) msgPart { return msgPart{b: s} }
func runPart(s string) msgPart { return msgPart{b: s, run: true} }

// runPartOf is p in base64 lines of n characters ending with eol, as a run.
func runPartOf(p []byte, n int, eol string) msgPart { return runPart(wrapBase64(p, n, eol)) }

// TestB64Runs checks which bytes the scan takes as runs, and that every
// message reads back exactly through encode and openRaw.
func TestB64Runs(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	hdr := "From: a@example.org\r\nSubject: report\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
	end := "--b--\r\n"
	att := func(n int) []byte { return randomBytes(r, n) }
	// Lines of a 60 KiB attachment, to break.
	lines := strings.SplitAfter(wrapBase64(att(60<<10), 76, "\r\n"), "\r\n")
	lines = lines[:len(lines)-1] // the empty string after the last CRLF
	join := func(ls []string) string { return strings.Join(ls, "") }
	// canonical and not: "QQ==" is 'A'; "QR==" has bits under the padding.
	oneByteTail := wrapBase64(att(3*700+1), 76, "\r\n") // last line ends "==\r\n"
	nonCanonical := oneByteTail[:len(oneByteTail)-5] + "R==\r\n"
	lastLine := oneByteTail[strings.LastIndex(oneByteTail[:len(oneByteTail)-2], "\n")+1:]
	letters := func(lines, n int) string {
		var b strings.Builder
		for range lines {
			for range n {
				b.WriteByte(byte('a' + r.IntN(26)))
			}
			b.WriteString("\r\n")
		}
		return b.String()
	}
	html := strings.Repeat("<tr><td class=\"item\">Quarterly figures</td><td>12.5%</td></tr>\r\n", 400)
	withCR := []byte(lines[40])
	copy(withCR[10:14], "\r\r\r\r") // still 76 characters: Decode skips the CRs
	tests := []struct {
		name  string
		parts []msgPart
		codec string // "" for any
	}{
		{"empty", nil, codecNone},
		{"CRLF 76, padding =", []msgPart{litPart(hdr), runPartOf(att(30<<10+2), 76, "\r\n"), litPart(end)}, codecB64},
		{"CRLF 76, padding ==", []msgPart{litPart(hdr), runPartOf(att(30<<10+1), 76, "\r\n"), litPart(end)}, codecB64},
		{"CRLF 76, no padding", []msgPart{litPart(hdr), runPartOf(att(30<<10), 76, "\r\n"), litPart(end)}, codecB64},
		{"last line full length with padding", []msgPart{litPart(hdr), runPartOf(att(57*40-1), 76, "\r\n"), litPart(end)}, codecB64},
		{"LF only", []msgPart{litPart(strings.ReplaceAll(hdr, "\r\n", "\n")), runPartOf(att(20<<10+1), 76, "\n"), litPart("--b--\n")}, codecB64},
		{"64-character lines", []msgPart{litPart(hdr), runPartOf(att(20<<10+2), 64, "\r\n"), litPart(end)}, codecB64},
		{"72-character lines", []msgPart{litPart(hdr), runPartOf(att(20<<10), 72, "\r\n"), litPart(end)}, codecB64},
		{"4-character lines", []msgPart{litPart(hdr), runPartOf(att(3<<10), 4, "\r\n"), litPart(end)}, codecB64},
		{"one long line", []msgPart{litPart(hdr), runPart(base64.StdEncoding.EncodeToString(att(100<<10+1)) + "\r\n"), litPart(end)}, codecB64},
		{"bad character mid-run", []msgPart{litPart(hdr), runPart(join(lines[:100])), litPart(lines[100][:30] + "*" + lines[100][31:]), runPart(join(lines[101:])), litPart(end)}, codecB64},
		{"CRs inside a line", []msgPart{litPart(hdr), runPart(join(lines[:40])), litPart(string(withCR)), runPart(join(lines[41:])), litPart(end)}, codecB64},
		{"LF line in a CRLF run", []msgPart{litPart(hdr), runPart(join(lines[:200])), litPart(strings.TrimSuffix(lines[200], "\r\n") + "\n"), runPart(join(lines[201:])), litPart(end)}, codecB64},
		{"CR CR LF line ending", []msgPart{litPart(hdr), runPart(join(lines[:200])), litPart(strings.TrimSuffix(lines[200], "\r\n") + "\r\r\n"), runPart(join(lines[201:])), litPart(end)}, codecB64},
		{"padding mid-run ends it", []msgPart{litPart(hdr), runPartOf(att(57*30-1), 76, "\r\n"), runPart(join(lines[:300])), litPart(end)}, codecB64},
		// The longer line starts a run, the next line ends it as its
		// last line: the run from the line after that loses one line.
		{"longer line before the run", []msgPart{litPart(hdr), litPart(base64.StdEncoding.EncodeToString(att(60)) + "\r\n" + lines[0]), runPart(join(lines[1:300])), litPart(end)}, codecB64},
		{"shorter line before the run", []msgPart{litPart(hdr), litPart("QUJD\r\n"), runPart(join(lines[:300])), litPart(end)}, codecB64},
		{"canonical final quantum", []msgPart{litPart(hdr), runPart(oneByteTail), litPart(end)}, codecB64},
		{"non-canonical final quantum", []msgPart{litPart(hdr), runPart(nonCanonical[:len(nonCanonical)-len(lastLine)]), litPart(nonCanonical[len(nonCanonical)-len(lastLine):]), litPart(end)}, codecB64},
		{"only base64", []msgPart{runPartOf(att(40<<10+1), 76, "\r\n")}, codecB64},
		{"open run at the end", []msgPart{litPart(hdr), runPart(strings.TrimSuffix(wrapBase64(att(40<<10+2), 76, "\r\n"), "\r\n"))}, codecB64},
		{"open run, full last line", []msgPart{litPart(hdr), runPart(strings.TrimSuffix(wrapBase64(att(57*50), 76, "\r\n"), "\r\n"))}, codecB64},
		{"open last line not a multiple of 4", []msgPart{litPart(hdr), runPart(join(lines[:300])), litPart(lines[300][:37])}, codecB64},
		{"CR without LF at the end", []msgPart{litPart(hdr), runPart(join(lines[:300])), litPart(lines[300][:76] + "\r")}, codecB64},
		{"base64 of HTML", []msgPart{litPart(hdr), runPartOf([]byte(html), 76, "\r\n"), litPart(end)}, codecB64},
		{"two attachments and an HTML part", []msgPart{litPart(hdr), runPartOf([]byte(html), 76, "\r\n"), litPart("--b\r\n\r\n"), runPartOf(att(50<<10), 76, "\r\n"),
			litPart("--b\r\n\r\n"), runPartOf(att(20<<10+1), 76, "\n"), litPart(end)}, codecB64},
		{"letters that are base64", []msgPart{litPart("Subject: letters\r\n\r\n"), runPart(letters(40, 76)), litPart("\r\n-- \r\nsignature\r\n")}, codecB64},
		{"plain text", []msgPart{litPart("Subject: text\r\n\r\n" + strings.Repeat("Dear team, the figures for March are attached; revenue grew 12%.\r\n", 200))}, codecS2},
		{"short runs stay literal", []msgPart{litPart("Subject: short\r\n\r\n" + strings.Repeat(wrapBase64(att(500), 76, "\r\n")+"--\r\n", 20))}, ""},
		{"huge", []msgPart{litPart(hdr), runPartOf(att(5<<20+1), 76, "\r\n"), litPart(end)}, codecB64},
	}
	var enc, small rawEncoder
	small.minRun = 4
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body []byte
			want := 0
			for _, p := range tt.parts {
				body = append(body, p.b...)
				if p.run {
					want += len(p.b)
				}
			}
			orig := bytes.Clone(body)
			if got := enc.scanRuns(body); got != want {
				t.Errorf("scanRuns() covers %d bytes in %d runs, want %d", got, len(enc.runs), want)
			}
			for i, r := range enc.runs {
				text := strings.NewReplacer("\r\n", "", "\n", "").Replace(string(body[r.start:r.end]))
				if r.end-r.start < minRunText || base64.StdEncoding.EncodeToString(enc.bin[r.bin:r.bin+r.n]) != text {
					t.Errorf("run %d = %+v, want %d bytes or more that decode to its bytes", i, r, minRunText)
				}
			}
			raw, codec := enc.encode(body)
			if tt.codec != "" && codec != tt.codec {
				t.Errorf("encode() codec = %q, want %q", codec, tt.codec)
			}
			if codec == codecB64 && len(raw) >= len(body)-want/5 {
				t.Errorf("encode() = %d bytes of %d, %d of them base64, want a fifth of those saved", len(raw), len(body), want)
			}
			checkReadsBack(t, codec, raw, orig)
			raw, codec = small.encode(body)
			checkReadsBack(t, codec, raw, orig)
			if !bytes.Equal(body, orig) {
				t.Error("encode() changed its input")
			}
		})
	}
}

// TestB64RandomMessages round-trips messages put together at random from
// pieces that stress the scan: lines of base64 of every length, padding,
// both line endings, stray characters, CRs and bytes that are no text.
func TestB64RandomMessages(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	pieces := []func() string{
		func() string { return wrapBase64(randomBytes(r, r.IntN(3000)), 4*(1+r.IntN(30)), "\r\n") },
		func() string { return wrapBase64(randomBytes(r, r.IntN(3000)), 76, "\n") },
		func() string { return wrapBase64([]byte(strings.Repeat("abc ", r.IntN(500))), 76, "\r\n") },
		func() string { return strings.TrimSuffix(wrapBase64(randomBytes(r, r.IntN(300)), 76, "\r\n"), "\r\n") },
		func() string { return "QQ==\r\n" },
		func() string { return "QR==\r\n" },
		func() string { return "=" },
		func() string { return "\r" },
		func() string { return "\n" },
		func() string { return "\r\n" },
		func() string { return "AAAA" },
		func() string { return "Subject: x\r\n" },
		func() string { return string(randomBytes(r, r.IntN(40))) },
		func() string { return "plain text line of words\r\n" },
	}
	var enc, small rawEncoder
	small.minRun = 4
	containers := map[*rawEncoder]int{}
	const n = 3000
	for range n {
		var b strings.Builder
		for range r.IntN(10) {
			b.WriteString(pieces[r.IntN(len(pieces))]())
		}
		body := []byte(b.String())
		for _, e := range []*rawEncoder{&enc, &small} {
			raw, codec := e.encode(body)
			checkReadsBack(t, codec, raw, body)
			if codec == codecB64 {
				containers[e]++
			}
		}
	}
	// Enough of them are containers for the test to mean something.
	if containers[&enc] < n/4 || containers[&small] < n/2 {
		t.Errorf("%d and %d of %d messages stored as b64s2, want a quarter and a half or more", containers[&enc], containers[&small], n)
	}
}

// TestDecodeQuanta compares decodeQuanta with the standard library on
// strings of the alphabet with a stray padding, CR, LF or other byte.
func TestDecodeQuanta(t *testing.T) {
	r := rand.New(rand.NewPCG(61, 62))
	const chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	strays := []byte{'=', '\r', '\n', '*', '-', '_', ' ', 0, 0x80, 0xff, 'A' + 128}
	for i := range 20000 {
		src := make([]byte, 4*r.IntN(30))
		for j := range src {
			src[j] = chars[r.IntN(len(chars))]
		}
		if len(src) > 0 && i%2 == 0 {
			src[r.IntN(len(src))] = strays[r.IntN(len(strays))]
		}
		got := make([]byte, len(src)/4*3+8)
		ok := decodeQuanta(got, src)
		want, err := strictB64.DecodeString(string(src))
		valid := err == nil && len(want) == len(src)/4*3 && !bytes.ContainsAny(src, "=\r\n")
		if ok != valid || ok && !bytes.Equal(got[:len(want)], want) {
			t.Fatalf("decodeQuanta(%q) = %v, %x; want %v, %x", src, ok, got, valid, want)
		}
	}
	if decodeQuanta(make([]byte, 5), []byte("QUJDQUJD")) {
		t.Error("decodeQuanta(8 characters into 5 bytes) = true, want false")
	}
}

// validContainer is a b64s2 container with literal bytes, a stored run
// and a packed one.
func validContainer(t testing.TB) (raw, body []byte) {
	t.Helper()
	r := rand.New(rand.NewPCG(41, 42))
	body = []byte("Subject: c\r\n\r\n" + wrapBase64(randomBytes(r, 60), 76, "\r\n") + "--\r\n" +
		wrapBase64([]byte(strings.Repeat("hello hello ", 30)), 64, "\n") + "end")
	enc := rawEncoder{minRun: 4}
	raw, codec := enc.encode(body)
	if codec != codecB64 {
		t.Fatalf("encode() codec = %q, want %q", codec, codecB64)
	}
	return raw, body
}

// TestB64ContainerCorrupt feeds the decoder damaged and made-up
// containers: it returns an error, never panics, and allocates no more
// than the bounds allow.
func TestB64ContainerCorrupt(t *testing.T) {
	raw, body := validContainer(t)
	checkReadsBack(t, codecB64, raw, body)
	for n := range len(raw) {
		if b, err := decodeB64Container(raw[:n]); err == nil {
			t.Errorf("decode(first %d of %d bytes) = %d bytes, want an error", n, len(raw), len(b))
		}
	}
	for i := range raw {
		for _, flip := range []byte{0x01, 0x80, 0xff} {
			c := bytes.Clone(raw)
			c[i] ^= flip
			if b, err := decodeB64Container(c); err == nil && len(b) > maxRunGrowth*len(c)*8 {
				t.Errorf("decode(byte %d ^ %#x) = %d bytes", i, flip, len(b))
			}
		}
	}
	uv := func(v ...uint64) []byte {
		var b []byte
		for _, x := range v {
			b = binary.AppendUvarint(b, x)
		}
		return b
	}
	cat := func(bs ...[]byte) string { return string(bytes.Join(bs, nil)) }
	stored := []byte("abcdef") // 6 bytes: "YWJjZGVm"
	tests := []struct {
		name, raw, err string
	}{
		{"empty", "", "container ends early"},
		{"version 2", cat([]byte{2}, uv(10, 0, 0, 6), stored, uv(0, 8, 12)), "format version 2"},
		{"over maxDecodedRaw", cat([]byte{1}, uv(maxDecodedRaw+1, 0, 0, 6), stored, uv(0, 8, 12)), "claims 1073741825 bytes"},
		{"claims more than the streams make", cat([]byte{1}, uv(6*6+1, 0, 0, 6), stored, uv(0, 8, 12)), "claims 37 bytes from 6"},
		{"packed kind 2", cat([]byte{1}, uv(10), []byte{2}, uv(0, 6), stored, uv(0, 8, 12)), "packed stream kind 2"},
		{"packed S2 block larger than the message", cat([]byte{1}, uv(10, 1, 3), []byte{0x7f, 0, 0}, uv(6), stored, uv(0, 8, 12)), "claims 127 bytes of a 10-byte message"},
		{"stream longer than the container", cat([]byte{1}, uv(10, 0, 0, 60), stored), "60 bytes claimed, 6 left"},
		{"uvarint overflow", cat([]byte{1}, bytes.Repeat([]byte{0xff}, 11)), "bad uvarint"},
		{"no decoded bytes", cat([]byte{1}, uv(10, 0, 0, 6), stored, uv(0, 8, 0)), "0 bytes of 6"},
		{"line length 0", cat([]byte{1}, uv(10, 0, 0, 6), stored, uv(0, 0, 12)), "line length 0,"},
		{"line length over the message", cat([]byte{1}, uv(10, 0, 0, 6), stored, uv(0, 1<<40, 12)), "line length 1099511627776,"},
		{"run beyond the stored stream", cat([]byte{1}, uv(10, 0, 0, 6), stored, uv(0, 8, 14)), "7 bytes of 6"},
		{"run beyond the message", cat([]byte{1}, uv(10, 0, 0, 6), stored, uv(0, 4, 12)), "12 bytes of text, 10 left"},
		{"literal beyond the packed stream", cat([]byte{1}, uv(11, 0, 1), []byte("x"), uv(6), stored, uv(2, 76, 12)), "2 literal bytes, 1 left"},
		{"stored bytes left over", cat([]byte{1}, uv(10, 0, 0, 6), stored, uv(0, 8, 10)), "1 stored bytes left over"},
		{"packed bytes left over", cat([]byte{1}, uv(10, 0, 2), []byte("xy"), uv(6), stored, uv(0, 8, 12)), "2 literal bytes after the last run, 0 left"},
		{"message longer than the runs", cat([]byte{1}, uv(11, 0, 0, 6), stored, uv(0, 8, 12)), "0 literal bytes after the last run, 1 left"},
		{"truncated run entry", cat([]byte{1}, uv(10, 0, 0, 6), stored, uv(0, 8)), "run 0: container ends early"},
	}
	for _, tt := range tests {
		if _, err := openRaw(codecB64, []byte(tt.raw)); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%s: openRaw(b64s2) = %v, want an error with %q", tt.name, err, tt.err)
		}
	}
	// The same made-up layout, consistent, reads back.
	if b, err := decodeB64Container([]byte(cat([]byte{1}, uv(9, 0, 0, 6), stored, uv(0, 8|shapeLF, 12)))); err != nil || string(b) != "YWJjZGVm\n" {
		t.Errorf("decode(a consistent made-up container) = %q, %v; want %q", b, err, "YWJjZGVm\n")
	}
}

// FuzzRawCodec checks that any message reads back exactly through encode
// and openRaw, with the default run threshold and with runs of any size
// (after an encode that left the scratch buffers dirty), and that the
// b64s2 decoder, given the input as a container, never panics.
func FuzzRawCodec(f *testing.F) {
	r := rand.New(rand.NewPCG(51, 52))
	f.Add([]byte(""))
	f.Add([]byte("Subject: x\r\n\r\nQUJD\r\nQQ==\r\n"))
	f.Add([]byte("Subject: x\r\n\r\nQUJD\r\nQR==\r\n"))
	f.Add([]byte("Subject: x\n\n" + wrapBase64(randomBytes(r, 1200), 76, "\n") + "--b--\n"))
	f.Add([]byte("Subject: x\r\n\r\n" + wrapBase64(randomBytes(r, 1100), 76, "\r\n") + "--b\r\n" + wrapBase64(randomBytes(r, 100), 64, "\r\n")))
	f.Add([]byte(strings.TrimSuffix(wrapBase64(randomBytes(r, 1000), 72, "\r\n"), "\r\n")))
	f.Add([]byte(strings.Repeat("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/abcdefghijkl\r\n", 20)))
	raw, _ := validContainer(f)
	f.Add(raw)
	// The encoders live across inputs, as a fetch worker's does, and
	// encode warm before each: their scratch holds other bytes.
	warm := []byte("Subject: w\r\n\r\n" + wrapBase64(randomBytes(r, 1200), 76, "\r\n"))
	encoders := []*rawEncoder{{}, {minRun: 4}}
	f.Fuzz(func(t *testing.T, body []byte) {
		orig := bytes.Clone(body)
		for _, enc := range encoders {
			enc.encode(warm)
			raw, codec := enc.encode(body)
			checkReadsBack(t, codec, raw, orig)
		}
		if !bytes.Equal(body, orig) {
			t.Fatal("encode() changed its input")
		}
		if b, err := decodeB64Container(body); err == nil && len(b) > maxRunGrowth*len(body)*8 {
			t.Fatalf("decode(%d bytes) = %d bytes", len(body), len(b))
		}
	})
}
