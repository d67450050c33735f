package outgoing

import (
	"bufio"
	"bytes"
	"math/rand/v2"
	"net/textproto"
	"testing"
)

// dotStuff writes body through a dotStuffer in the given chunk sizes.
func dotStuff(t *testing.T, body []byte, chunks []int) []byte {
	t.Helper()
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	d := &dotStuffer{w: bw, lineStart: true, empty: true}
	for len(body) > 0 {
		n := len(body)
		if len(chunks) > 0 {
			n = min(chunks[0], n)
			chunks = chunks[1:]
		}
		if w, err := d.Write(body[:n]); err != nil || w != n {
			t.Fatalf("Write = %d, %v; want %d", w, err, n)
		}
		body = body[n:]
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// textprotoDotStuff is the reference: net/textproto's DotWriter.
func textprotoDotStuff(t *testing.T, body []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	dw := textproto.NewWriter(bw).DotWriter()
	if _, err := dw.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := dw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestDotStufferMatchesTextproto: the same bytes on the wire as textproto's
// DotWriter, for bodies full of the cases that matter (dots at line starts,
// bare LF, bare CR, CRLF split across writes, no final line break, empty),
// written in chunks of every size.
func TestDotStufferMatchesTextproto(t *testing.T) {
	cases := [][]byte{
		nil,
		[]byte("."),
		[]byte(".\r\n"),
		[]byte("a\r\n.\r\n..b\r\n"),
		[]byte("line\nbare lf\n.dot after lf\n"),
		[]byte("ends without a break"),
		[]byte("ends with cr\r"),
		[]byte("\r\n\r\n.\r\n"),
		[]byte("bare\rcr\r\n.x"),
		[]byte("\n.\n"),
	}
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte(".\r\na.")
	for range 300 {
		b := make([]byte, r.IntN(80))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		cases = append(cases, b)
	}
	for i, body := range cases {
		if bytes.Contains(body, []byte("\r\r")) {
			// textproto turns "\r\r\n" into "\r\r\r\n" (after a CR it does
			// not look at the next byte for another CR); the dotStuffer
			// leaves the CRLF as it is. TestDotStufferDoubleCR has it.
			continue
		}
		want := textprotoDotStuff(t, body)
		for _, chunk := range []int{0, 1, 2, 3, 7} {
			var chunks []int
			if chunk > 0 {
				for range len(body) {
					chunks = append(chunks, chunk)
				}
			}
			if got := dotStuff(t, body, chunks); !bytes.Equal(got, want) {
				t.Fatalf("case %d %q in chunks of %d:\n got %q\nwant %q", i, body, chunk, got, want)
			}
		}
		var random []int
		for range len(body) {
			random = append(random, 1+r.IntN(5))
		}
		if got := dotStuff(t, body, random); !bytes.Equal(got, want) {
			t.Fatalf("case %d %q in random chunks %v:\n got %q\nwant %q", i, body, random, got, want)
		}
	}
}

// TestDotStufferDoubleCR: a CR before a CRLF stays one CR.
func TestDotStufferDoubleCR(t *testing.T) {
	for _, chunks := range [][]int{nil, {1, 1, 1, 1, 1, 1}} {
		if got, want := dotStuff(t, []byte("a\r\r\n.b"), chunks), []byte("a\r\r\n..b\r\n.\r\n"); !bytes.Equal(got, want) {
			t.Errorf("chunks %v: got %q, want %q", chunks, got, want)
		}
	}
}
