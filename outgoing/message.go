package outgoing

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"mime"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mailsync/mailsync/internal/apperr"
	gomail "github.com/wneessen/go-mail"
)

// Draft is a message submitted for sending, before it is built.
type Draft struct {
	From        string // "Name <addr>" or "addr"
	To          []string
	Cc          []string
	Bcc         []string
	ReplyTo     string
	Subject     string
	Text        string
	HTML        string
	Attachments []Attachment
	Headers     map[string]string
	// SenderName overrides the From's display name (CRM senders).
	SenderName *string
}

// Attachment is a file attached to a Draft.
type Attachment struct {
	Filename    string
	ContentType string
	Content     []byte
}

const maxRecipients = 500

// reservedHeaders are set by mailsync itself; a draft may not supply them.
var reservedHeaders = map[string]bool{
	"from": true, "to": true, "cc": true, "bcc": true, "reply-to": true, "subject": true,
	"sender": true, "date": true, "message-id": true, "mime-version": true, "return-path": true,
	"content-type": true, "content-transfer-encoding": true, "content-disposition": true,
	"received": true, "dkim-signature": true,
}

// wordDecoder decodes RFC 2047 encoded words so that what they hide is
// checked too.
var wordDecoder = &mime.WordDecoder{CharsetReader: nil}

// checkHeaderText refuses CR, LF and NUL in a header value, also when an
// encoded word hides them.
func checkHeaderText(field, v string) error {
	if strings.ContainsAny(v, "\r\n\x00") {
		return apperr.Invalid(field, "header_injection", "line breaks and NUL are not allowed here")
	}
	if !utf8.ValidString(v) {
		return apperr.Invalid(field, "invalid_utf8", "the text is not valid UTF-8")
	}
	if strings.Contains(v, "=?") {
		if dec, err := wordDecoder.DecodeHeader(v); err == nil && strings.ContainsAny(dec, "\r\n\x00") {
			return apperr.Invalid(field, "header_injection", "an encoded word hides a line break or NUL")
		}
	}
	return nil
}

// parseAddress parses one RFC 5322 address ("Name <a@b>" or "a@b").
func parseAddress(field, v string) (*mail.Address, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, apperr.Invalid(field, "required", "an email address is required")
	}
	if err := checkHeaderText(field, v); err != nil {
		return nil, err
	}
	a, err := mail.ParseAddress(v)
	if err != nil {
		return nil, apperr.Invalid(field, "invalid_address", "%q is not a valid email address", v)
	}
	if err := checkHeaderText(field, a.Name); err != nil {
		return nil, err
	}
	if strings.ContainsAny(a.Address, "\r\n\x00<>, ") || !strings.Contains(a.Address, "@") {
		return nil, apperr.Invalid(field, "invalid_address", "%q is not a valid email address", v)
	}
	return a, nil
}

// parseBareAddress parses an address without a display name.
func parseBareAddress(field, v string) (string, error) {
	a, err := parseAddress(field, v)
	if err != nil {
		return "", err
	}
	if a.Name != "" {
		return "", apperr.Invalid(field, "invalid_address", "give the address alone, without a name")
	}
	return a.Address, nil
}

// built is a message ready for the outbox.
type built struct {
	raw        []byte
	messageID  string
	from       *mail.Address
	recipients []string
}

// validate checks every field of a draft and parses its addresses.
func (d *Draft) validate(maxBytes int64) (from *mail.Address, to, cc, bcc []*mail.Address, replyTo *mail.Address, err error) {
	if from, err = parseAddress("from", d.From); err != nil {
		return
	}
	list := func(field string, vs []string) ([]*mail.Address, error) {
		out := make([]*mail.Address, 0, len(vs))
		for i, v := range vs {
			a, err := parseAddress(fmt.Sprintf("%s[%d]", field, i), v)
			if err != nil {
				return nil, err
			}
			out = append(out, a)
		}
		return out, nil
	}
	if to, err = list("to", d.To); err != nil {
		return
	}
	if cc, err = list("cc", d.Cc); err != nil {
		return
	}
	if bcc, err = list("bcc", d.Bcc); err != nil {
		return
	}
	n := len(to) + len(cc) + len(bcc)
	if n == 0 {
		err = apperr.Invalid("to", "required", "at least one recipient is required")
		return
	}
	if n > maxRecipients {
		err = apperr.Invalid("to", "too_many_recipients", "at most %d recipients per message", maxRecipients)
		return
	}
	if d.ReplyTo != "" {
		if replyTo, err = parseAddress("reply_to", d.ReplyTo); err != nil {
			return
		}
	}
	if d.SenderName != nil {
		if err = checkHeaderText("name", *d.SenderName); err != nil {
			return
		}
	}
	if err = checkHeaderText("subject", d.Subject); err != nil {
		return
	}
	if d.Text == "" && d.HTML == "" {
		err = apperr.Invalid("text", "required", "a text or an html body is required")
		return
	}
	for field, body := range map[string]string{"text": d.Text, "html": d.HTML} {
		if strings.ContainsRune(body, 0) {
			err = apperr.Invalid(field, "nul_in_body", "the body contains a NUL byte")
			return
		}
		if !utf8.ValidString(body) {
			err = apperr.Invalid(field, "invalid_utf8", "the body is not valid UTF-8")
			return
		}
	}
	for name, v := range d.Headers {
		field := "headers." + name
		if !validHeaderName(name) {
			err = apperr.Invalid(field, "invalid_header_name", "%q is not a valid header name", name)
			return
		}
		if reservedHeaders[strings.ToLower(name)] {
			err = apperr.Invalid(field, "reserved_header", "%s is set by mailsync and cannot be given", name)
			return
		}
		if err = checkHeaderText(field, v); err != nil {
			return
		}
	}
	var total int64
	for i, a := range d.Attachments {
		field := fmt.Sprintf("attachments[%d]", i)
		if strings.TrimSpace(a.Filename) == "" {
			err = apperr.Invalid(field+".filename", "required", "an attachment needs a file name")
			return
		}
		if err = checkHeaderText(field+".filename", a.Filename); err != nil {
			return
		}
		if strings.ContainsAny(a.Filename, `/\"`) {
			err = apperr.Invalid(field+".filename", "invalid_filename", "a file name may not contain / \\ or \"")
			return
		}
		if a.ContentType != "" {
			if _, _, perr := mime.ParseMediaType(a.ContentType); perr != nil || strings.ContainsAny(a.ContentType, "\r\n\x00") {
				err = apperr.Invalid(field+".content_type", "invalid_content_type", "%q is not a media type", a.ContentType)
				return
			}
		}
		total += int64(len(a.Content))
	}
	if total+int64(len(d.Text)+len(d.HTML)) > maxBytes {
		err = apperr.New(apperr.ErrTooLarge, "message_too_large", "the message is larger than %d bytes", maxBytes)
	}
	return
}

func validHeaderName(name string) bool {
	if name == "" || len(name) > 76 {
		return false
	}
	for _, c := range []byte(name) {
		if c < 33 || c > 126 || c == ':' {
			return false
		}
	}
	return true
}

// normalizeNewlines turns bare LF and bare CR into CRLF.
func normalizeNewlines(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	return strings.ReplaceAll(s, "\n", "\r\n")
}

// newMessageID returns a fresh Message-ID (without angle brackets) in the
// sender's domain.
func newMessageID(domain string, now time.Time) string {
	b := make([]byte, 15)
	_, _ = rand.Read(b)
	id := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
	if domain == "" {
		domain = "mailsync.invalid"
	}
	return fmt.Sprintf("%d.%s@%s", now.Unix(), id, domain)
}

// build renders the draft as the exact RFC 5322 message every attempt sends.
// The route's SenderName is the fallback for a From without a name; its
// SenderHeader becomes the Sender header.
func (d *Draft) build(maxBytes int64, rt Route, now time.Time) (*built, error) {
	from, to, cc, bcc, replyTo, err := d.validate(maxBytes)
	if err != nil {
		return nil, err
	}
	return d.render(maxBytes, rt, now, from, to, cc, bcc, replyTo)
}

// render builds a draft whose addresses validate has parsed already.
func (d *Draft) render(maxBytes int64, rt Route, now time.Time, from *mail.Address, to, cc, bcc []*mail.Address, replyTo *mail.Address) (*built, error) {
	senderName := rt.SenderName
	name := from.Name
	if d.SenderName != nil {
		name = *d.SenderName
	}
	if name == "" {
		name = senderName
	}
	from = &mail.Address{Name: name, Address: from.Address}

	m := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	m.SetAddrHeaderFromMailAddress(gomail.HeaderFrom, from)
	if len(to) > 0 {
		m.SetAddrHeaderFromMailAddress(gomail.HeaderTo, to...)
	}
	if len(cc) > 0 {
		m.SetAddrHeaderFromMailAddress(gomail.HeaderCc, cc...)
	}
	if replyTo != nil {
		m.ReplyToMailAddress(replyTo)
	}
	if rt.SenderHeader != "" {
		m.SetGenHeaderPreformatted(gomail.Header("Sender"), "<"+rt.SenderHeader+">")
	}
	m.Subject(d.Subject)
	_, domain, _ := strings.Cut(from.Address, "@")
	id := newMessageID(domain, now)
	m.SetMessageIDWithValue(id)
	m.SetDateWithValue(now)
	for k, v := range d.Headers {
		m.SetGenHeader(gomail.Header(k), v)
	}
	switch {
	case d.Text != "" && d.HTML != "":
		m.SetBodyString(gomail.TypeTextPlain, normalizeNewlines(d.Text))
		m.AddAlternativeString(gomail.TypeTextHTML, normalizeNewlines(d.HTML))
	case d.HTML != "":
		m.SetBodyString(gomail.TypeTextHTML, normalizeNewlines(d.HTML))
	default:
		m.SetBodyString(gomail.TypeTextPlain, normalizeNewlines(d.Text))
	}
	for _, a := range d.Attachments {
		opts := []gomail.FileOption{}
		if a.ContentType != "" {
			opts = append(opts, gomail.WithFileContentType(gomail.ContentType(a.ContentType)))
		}
		m.AttachReadSeeker(a.Filename, bytes.NewReader(a.Content), opts...)
	}
	// Sized once for what the message will take (quoted-printable adds a
	// little, base64 a third), instead of growing by doubling.
	size := 2048 + len(d.Text) + len(d.HTML) + (len(d.Text)+len(d.HTML))/8
	for _, a := range d.Attachments {
		size += len(a.Content)*4/3 + len(a.Content)/38 + 512
	}
	var buf bytes.Buffer
	buf.Grow(int(min(int64(size), maxBytes+4096)))
	if _, err := m.WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("render message: %w", err)
	}
	if int64(buf.Len()) > maxBytes {
		return nil, apperr.New(apperr.ErrTooLarge, "message_too_large",
			"the message is %d bytes encoded, more than the limit of %d", buf.Len(), maxBytes)
	}
	var rcpts []string
	for _, l := range [][]*mail.Address{to, cc, bcc} {
		for _, a := range l {
			rcpts = append(rcpts, a.Address)
		}
	}
	return &built{raw: buf.Bytes(), messageID: id, from: from, recipients: dedupe(rcpts)}, nil
}

func dedupe(addrs []string) []string {
	seen := make(map[string]bool, len(addrs))
	out := addrs[:0]
	for _, a := range addrs {
		k := strings.ToLower(a)
		if !seen[k] {
			seen[k] = true
			out = append(out, a)
		}
	}
	return out
}
