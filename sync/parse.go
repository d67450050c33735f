package imapsync

import (
	"bufio"
	"errors"
	"fmt"
	"html"
	"io"
	"mime"
	"strings"
	"time"
	"unicode"

	"github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // charsets beyond UTF-8 and ASCII for bodies and headers
	"github.com/emersion/go-message/mail"
)

// Bounds of what parsing keeps; everything past them is read and dropped.
const (
	snippetRunes   = 200      // runes of the plain-text snippet
	snippetScan    = 16 << 10 // decoded bytes of a text part read for the snippet
	maxAttachments = 100      // attachment names kept per message
	maxHeaderText  = 4 << 10  // bytes kept of one header's text
	maxRefsText    = 8 << 10  // bytes kept of References
	maxAddresses   = 100      // addresses kept per header
	viewTextLimit  = 1 << 20  // decoded bytes of text and of HTML in a message view
	maxHeaderBytes = 1 << 20  // a header block larger than this fails the parse
)

// ErrParse is the kind of a message that cannot be read as RFC 5322 (its
// header block is broken); such a message is retried, then quarantined.
var ErrParse = errors.New("message cannot be parsed")

// parsed is what the sync keeps of a message besides its raw bytes.
type parsed struct {
	MessageID   string
	InReplyTo   string
	Refs        string
	SentAt      *time.Time
	From        []Address
	To          []Address
	Cc          []Address
	Subject     string
	Snippet     string
	Attachments []string
}

// parseMessage reads the header and walks the MIME tree of the message in
// r, keeping the fields above; it does not read r to its end. Only a broken
// header block is an error (ErrParse): a broken body part ends the walk
// with what was found so far.
func parseMessage(r io.Reader) (p parsed, err error) {
	defer func() {
		// go-message on hostile input is outside our control: a panic is
		// a parse failure of this message, not of the sync.
		if v := recover(); v != nil {
			err = fmt.Errorf("%w: panic: %v", ErrParse, v)
		}
	}()
	ent, err := message.ReadWithOptions(r, &message.ReadOptions{MaxHeaderBytes: maxHeaderBytes})
	if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		return parsed{}, fmt.Errorf("%w: %v", ErrParse, err)
	}
	h := mail.Header{Header: ent.Header}
	p.MessageID = clean(messageID(h), maxHeaderText)
	if ids := msgIDList(h, "In-Reply-To"); len(ids) > 0 {
		p.InReplyTo = clean(ids[0], maxHeaderText)
	}
	p.Refs = clean(strings.Join(msgIDList(h, "References"), " "), maxRefsText)
	if d, err := h.Date(); err == nil && !d.IsZero() {
		// Years 1 to 9999 only: SQLite stores others but no row of the
		// folder reads back (FuzzMessageRecord found "Date: … 0000").
		if d = d.UTC(); d.Year() >= 1 && d.Year() <= 9999 {
			p.SentAt = &d
		}
	}
	p.From, p.To, p.Cc = addresses(h, "From"), addresses(h, "To"), addresses(h, "Cc")
	subj, _ := h.Subject() // on error: the raw text
	p.Subject = clean(oneLine(subj), maxHeaderText)

	var plain, htmlText string
	_ = ent.Walk(func(_ []int, part *message.Entity, err error) error {
		if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
			return err
		}
		if part.MultipartReader() != nil {
			return nil
		}
		if name, ok := attachmentName(part); ok {
			if len(p.Attachments) < maxAttachments {
				p.Attachments = append(p.Attachments, clean(name, maxHeaderText))
			}
			return nil
		}
		t, _, _ := part.Header.ContentType()
		switch {
		case (t == "text/plain" || t == "") && plain == "" && err == nil:
			plain = readText(part.Body, snippetScan)
		case t == "text/html" && htmlText == "" && err == nil:
			htmlText = htmlToText(readText(part.Body, snippetScan))
		}
		return nil
	})
	text := plain
	if strings.TrimSpace(text) == "" {
		text = htmlText
	}
	p.Snippet = clean(snippet(text, snippetRunes), 0)
	return p, nil
}

func messageID(h mail.Header) string {
	id, err := h.MessageID()
	if err != nil || id == "" {
		return strings.Trim(strings.TrimSpace(h.Get("Message-Id")), "<>")
	}
	return id
}

func msgIDList(h mail.Header, key string) []string {
	ids, err := h.MsgIDList(key)
	if err != nil && len(ids) == 0 {
		// Not in msg-id syntax: keep the words as they are.
		for _, f := range strings.Fields(h.Get(key)) {
			ids = append(ids, strings.Trim(f, "<>"))
		}
	}
	return ids
}

// addresses decodes an address header; one that does not parse is kept as
// a single entry whose name is the decoded text.
func addresses(h mail.Header, key string) []Address {
	list, err := h.AddressList(key)
	if err != nil {
		raw, _ := h.Text(key)
		raw = oneLine(raw)
		if strings.TrimSpace(raw) == "" {
			return nil
		}
		return []Address{{Name: clean(raw, maxHeaderText)}}
	}
	out := make([]Address, 0, min(len(list), maxAddresses))
	for _, a := range list {
		if len(out) == maxAddresses {
			break
		}
		out = append(out, Address{Name: clean(oneLine(a.Name), maxHeaderText), Email: clean(a.Address, maxHeaderText)})
	}
	return out
}

// attachmentName returns the file name of a part that is an attachment:
// Content-Disposition attachment, or any part with a file name that is not
// inline text. Parts without a name get a generic one by type.
func attachmentName(part *message.Entity) (string, bool) {
	ah := mail.AttachmentHeader{Header: part.Header}
	disp, _, _ := part.Header.ContentDisposition()
	name, _ := ah.Filename()
	t, _, _ := part.Header.ContentType()
	switch {
	case strings.EqualFold(disp, "attachment"):
	case name != "" && !(strings.EqualFold(disp, "inline") && strings.HasPrefix(t, "text/")):
	case t == "message/rfc822":
		name = "message.eml"
	default:
		return "", false
	}
	if name == "" {
		name = "attachment"
		if exts, _ := mime.ExtensionsByType(t); len(exts) > 0 {
			name += exts[0]
		}
	}
	return oneLine(name), true
}

// readText reads up to limit bytes of decoded text, as valid UTF-8.
func readText(r io.Reader, limit int64) string {
	b, _ := io.ReadAll(io.LimitReader(r, limit))
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// snippet is the first n runes of text with whitespace collapsed.
func snippet(text string, n int) string {
	var b strings.Builder
	space, count := false, 0
	for _, r := range text {
		if unicode.IsSpace(r) || r == '\u00a0' {
			space = b.Len() > 0
			continue
		}
		if !unicode.IsPrint(r) {
			continue
		}
		if space {
			b.WriteByte(' ')
			count++
			space = false
		}
		if count >= n {
			break
		}
		b.WriteRune(r)
		count++
	}
	return strings.TrimSpace(b.String())
}

func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n\t") {
		return strings.TrimSpace(s)
	}
	return strings.Join(strings.Fields(s), " ")
}

// htmlToText drops tags, comments, scripts and styles and unescapes
// entities: enough for a snippet, not a renderer. Tag names match without
// regard to ASCII case; text between tags is copied in runs.
func htmlToText(s string) string {
	var b strings.Builder
	b.Grow(len(s) / 2)
	for i := 0; i < len(s); {
		if s[i] != '<' {
			end := len(s)
			if lt := strings.IndexByte(s[i:], '<'); lt >= 0 {
				end = i + lt
			}
			b.WriteString(s[i:end])
			i = end
			continue
		}
		rest := s[i:]
		switch {
		case strings.HasPrefix(rest, "<!--"):
			end := strings.Index(rest[4:], "-->")
			if end < 0 {
				return html.UnescapeString(b.String())
			}
			i += 4 + end + 3
		case hasPrefixFold(rest, "<script"), hasPrefixFold(rest, "<style"), hasPrefixFold(rest, "<head"):
			tag := "</script"
			if hasPrefixFold(rest, "<style") {
				tag = "</style"
			} else if hasPrefixFold(rest, "<head") {
				tag = "</head"
			}
			end := indexFold(rest, tag)
			if end < 0 {
				return html.UnescapeString(b.String())
			}
			i += end + len(tag)
			if gt := strings.IndexByte(s[i:], '>'); gt >= 0 {
				i += gt + 1
			}
		default:
			gt := strings.IndexByte(rest, '>')
			if gt < 0 {
				return html.UnescapeString(b.String())
			}
			b.WriteByte(' ')
			i += gt + 1
		}
	}
	return html.UnescapeString(b.String())
}

// hasPrefixFold reports whether s begins with prefix, a lower-case ASCII
// string, in any ASCII case.
func hasPrefixFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := range len(prefix) {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

// indexFold is the index of the first sub (lower-case ASCII, starting
// with '<') in s in any ASCII case, or -1.
func indexFold(s, sub string) int {
	for i := 0; i < len(s); {
		lt := strings.IndexByte(s[i:], sub[0])
		if lt < 0 {
			return -1
		}
		i += lt
		if hasPrefixFold(s[i:], sub) {
			return i
		}
		i++
	}
	return -1
}

// View is a message as the API shows it: decoded headers, text, HTML and
// the attachment list, parsed from the stored raw message.
type View struct {
	Headers     []Header         `json:"headers"`
	Text        string           `json:"text"`
	HTML        string           `json:"html"`
	Truncated   bool             `json:"truncated,omitempty"` // text or HTML was cut at 1 MiB
	Attachments []AttachmentInfo `json:"attachment_parts"`
}

// Header is one header field, its value decoded (RFC 2047).
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// AttachmentInfo describes an attachment of a message view.
type AttachmentInfo struct {
	Name        string `json:"name"`
	ContentType string `json:"content_type"`
	Size        int64  `json:"size"` // decoded bytes
}

// buildView parses a whole raw message into a View, reading at most
// viewTextLimit bytes of text and of HTML; attachment bodies are counted,
// not kept.
func buildView(r io.Reader) (View, error) {
	v := View{Headers: []Header{}, Attachments: []AttachmentInfo{}}
	ent, err := message.ReadWithOptions(bufio.NewReader(r), &message.ReadOptions{MaxHeaderBytes: maxHeaderBytes})
	if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		return v, fmt.Errorf("%w: %v", ErrParse, err)
	}
	fields := ent.Header.Fields()
	for fields.Next() {
		val, _ := fields.Text()
		v.Headers = append(v.Headers, Header{Name: clean(fields.Key(), 0), Value: clean(oneLine(val), 0)})
	}
	_ = ent.Walk(func(_ []int, part *message.Entity, err error) error {
		if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
			return err
		}
		if part.MultipartReader() != nil {
			return nil
		}
		t, _, _ := part.Header.ContentType()
		if name, ok := attachmentName(part); ok {
			n, _ := io.Copy(io.Discard, part.Body)
			v.Attachments = append(v.Attachments, AttachmentInfo{Name: clean(name, 0), ContentType: t, Size: n})
			return nil
		}
		switch {
		case (t == "text/plain" || t == "") && v.Text == "":
			v.Text = readText(part.Body, viewTextLimit)
			if n, _ := io.Copy(io.Discard, part.Body); n > 0 {
				v.Truncated = true
			}
		case t == "text/html" && v.HTML == "":
			v.HTML = readText(part.Body, viewTextLimit)
			if n, _ := io.Copy(io.Discard, part.Body); n > 0 {
				v.Truncated = true
			}
		}
		return nil
	})
	return v, nil
}
