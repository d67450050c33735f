package outgoing

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/mail"
	"strings"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
)

// SubmitRaw commits a message that arrived whole — over SMTP submission or
// from the sendmail command — to the outbox, routed by its header From
// exactly as Submit routes a Draft. When SubmitRaw returns, the message is
// durable.
//
// The message is read up to Config().MaxMessageBytes; one byte more is
// ErrTooLarge. It must have exactly one From with one address (RFC 5322
// 3.6); when it has none, envelopeFrom (MAIL FROM, sendmail -f) is used, as
// sendmail does, and is otherwise only logged: MAIL FROM upstream is the
// route's. rcpts are the envelope recipients, the only ones the message goes
// to; any Bcc header is removed from the stored bytes.
//
// The stored message is the one received, changed only where mailsync must:
// bare LF and bare CR become CRLF (RFC 5322 2.3); a From without a display
// name gets the route's sender name (that one line is rewritten, the name
// Q-encoded when not ASCII); Message-ID and Date are added when missing (an
// existing Message-ID is kept and becomes the outbox's); the route's Sender
// header, if any, replaces a Sender the message had.
func (s *Service) SubmitRaw(ctx context.Context, c Caller, envelopeFrom string, rcpts []string, raw io.Reader, opts SubmitOptions) (OutboxMessage, error) {
	if opts.SenderID != "" {
		return OutboxMessage{}, apperr.Invalid("sender_id", "unsupported",
			"a whole message is routed by its From header; sender_id is not supported here")
	}
	if opts.CRM != nil {
		if err := validateCRM(opts.CRM); err != nil {
			return OutboxMessage{}, err
		}
	}
	limit := s.cfg.MaxMessageBytes
	// Bounded: at most MaxMessageBytes+1 bytes are held, and the outbox
	// stores the message whole anyway.
	data, err := io.ReadAll(io.LimitReader(raw, limit+1))
	if err != nil {
		return OutboxMessage{}, fmt.Errorf("read message: %w", err)
	}
	if int64(len(data)) > limit {
		return OutboxMessage{}, apperr.New(apperr.ErrTooLarge, "message_too_large",
			"the message is larger than the limit of %d bytes", limit)
	}
	msg, err := parseRaw(data)
	if err != nil {
		return OutboxMessage{}, err
	}
	from, err := msg.fromAddress(envelopeFrom)
	if err != nil {
		return OutboxMessage{}, err
	}
	recipients := make([]string, 0, len(rcpts)+1)
	for i, r := range rcpts {
		a, err := parseBareAddress(fmt.Sprintf("rcpt[%d]", i), r)
		if err != nil {
			return OutboxMessage{}, err
		}
		recipients = append(recipients, a)
	}
	if opts.CopyToSelf {
		recipients = append(recipients, from.Address)
	}
	recipients = dedupe(recipients)
	switch {
	case len(recipients) == 0:
		return OutboxMessage{}, apperr.Invalid("rcpt", "required", "at least one recipient is required")
	case len(recipients) > maxRecipients:
		return OutboxMessage{}, apperr.Invalid("rcpt", "too_many_recipients", "at most %d recipients per message", maxRecipients)
	}
	id, err := msg.messageID()
	if err != nil {
		return OutboxMessage{}, err
	}

	rt, err := s.route(ctx, c, from.Address)
	if err != nil {
		return OutboxMessage{}, err
	}
	now := s.now()
	if from.Name == "" && rt.SenderName != "" {
		from = &mail.Address{Name: rt.SenderName, Address: from.Address}
		msg.setFrom(from)
	} else if msg.fromIndex < 0 {
		msg.setFrom(from)
	}
	if id == "" {
		_, domain, _ := strings.Cut(from.Address, "@")
		id = newMessageID(domain, now)
		msg.add("Message-ID", "<"+id+">")
	}
	if !msg.has("Date") {
		msg.add("Date", now.Format(time.RFC1123Z))
	}
	if rt.SenderHeader != "" {
		msg.remove("Sender")
		msg.add("Sender", "<"+rt.SenderHeader+">")
	}
	msg.remove("Bcc")
	msg.remove("Resent-Bcc")
	b := &built{raw: msg.bytes(), messageID: id, from: from, recipients: recipients}
	return s.enqueue(ctx, c, rt, b, msg.subject(), opts, now)
}

// rawField is one header field as received: its name and every line of it,
// continuation lines included, each ending in CRLF.
type rawField struct {
	name string
	raw  []byte
}

// value is the unfolded field body (RFC 5322 2.2.3), without the name.
func (f rawField) value() string {
	_, v, _ := bytes.Cut(f.raw, []byte{':'})
	v = bytes.TrimSuffix(v, []byte("\r\n"))
	return strings.TrimSpace(strings.ReplaceAll(string(v), "\r\n", ""))
}

// rawMessage is a received message split into its header fields and body.
type rawMessage struct {
	fields    []rawField
	body      []byte // after the empty line; nil when there was none
	fromIndex int    // index of the From field, -1 when missing
}

// parseRaw splits a message into header fields and body, after turning
// every line ending into CRLF. NUL anywhere, a header line that is not a
// field and a field name that is not printable ASCII are refused. A leading
// mbox "From " line, which some programs hand to sendmail, is dropped, and
// a body not ending in a line break gets one.
func parseRaw(data []byte) (*rawMessage, error) {
	if i := bytes.IndexByte(data, 0); i >= 0 {
		return nil, apperr.Invalid("message", "nul_in_message", "the message contains a NUL byte (at byte %d)", i)
	}
	data = crlf(data)
	m := &rawMessage{fromIndex: -1}
	rest := data
	line := 0
	for len(rest) > 0 {
		end := bytes.Index(rest, []byte("\r\n"))
		var l []byte
		if end < 0 {
			l, rest = rest, nil
		} else {
			l, rest = rest[:end+2], rest[end+2:]
		}
		line++
		content := bytes.TrimSuffix(l, []byte("\r\n"))
		switch {
		case len(content) == 0:
			m.body = rest
			if m.body == nil {
				m.body = []byte{}
			}
			rest = nil
		case content[0] == ' ' || content[0] == '\t':
			if len(m.fields) == 0 {
				return nil, apperr.Invalid("message", "malformed_header",
					"line %d of the header is a continuation line without a field before it", line)
			}
			f := &m.fields[len(m.fields)-1]
			f.raw = append(f.raw, l...)
		case line == 1 && bytes.HasPrefix(content, []byte("From ")) &&
			!bytes.HasPrefix(bytes.TrimLeft(content[5:], " \t"), []byte{':'}):
			// An mbox postmark, not a header field.
		default:
			name, _, ok := bytes.Cut(content, []byte{':'})
			if !ok || !validHeaderName(strings.TrimRight(string(name), " \t")) {
				return nil, apperr.Invalid("message", "malformed_header",
					"line %d of the header is not a header field (a blank line must separate the header from the body)", line)
			}
			raw := append([]byte(nil), content...)
			m.fields = append(m.fields, rawField{name: strings.TrimRight(string(name), " \t"), raw: append(raw, '\r', '\n')})
		}
	}
	if len(m.fields) == 0 {
		return nil, apperr.Invalid("message", "no_header", "the message has no header")
	}
	if len(m.body) > 0 && !bytes.HasSuffix(m.body, []byte("\r\n")) {
		m.body = append(m.body, '\r', '\n') // SMTP ends the data with CRLF.
	}
	for i, f := range m.fields {
		if strings.EqualFold(f.name, "From") {
			if m.fromIndex >= 0 {
				return nil, apperr.Invalid("from", "multiple_from", "the message has more than one From header")
			}
			m.fromIndex = i
		}
	}
	return m, nil
}

// fromAddress returns the one From address, or envelopeFrom when the
// message has no From.
func (m *rawMessage) fromAddress(envelopeFrom string) (*mail.Address, error) {
	if m.fromIndex < 0 {
		if strings.TrimSpace(envelopeFrom) == "" {
			return nil, apperr.Invalid("from", "required", "the message has no From header")
		}
		a, err := parseBareAddress("from", envelopeFrom)
		if err != nil {
			return nil, err
		}
		return &mail.Address{Address: a}, nil
	}
	return parseAddress("from", m.fields[m.fromIndex].value())
}

// messageID returns the message's own Message-ID without angle brackets, or
// "" when it has none.
func (m *rawMessage) messageID() (string, error) {
	id := ""
	for _, f := range m.fields {
		if !strings.EqualFold(f.name, "Message-ID") {
			continue
		}
		if id != "" {
			return "", apperr.Invalid("message_id", "multiple_message_id", "the message has more than one Message-ID header")
		}
		v := f.value()
		inner, ok := strings.CutPrefix(v, "<")
		if ok {
			inner, ok = strings.CutSuffix(inner, ">")
		}
		if !ok || inner == "" || len(inner) > 250 || strings.ContainsAny(inner, " \t<>\x00") || !strings.Contains(inner, "@") {
			return "", apperr.Invalid("message_id", "invalid_message_id", "%q is not a Message-ID such as <id@example.com>", v)
		}
		id = inner
	}
	return id, nil
}

func (m *rawMessage) has(name string) bool {
	for _, f := range m.fields {
		if strings.EqualFold(f.name, name) {
			return true
		}
	}
	return false
}

// add appends a field at the end of the header.
func (m *rawMessage) add(name, value string) {
	m.fields = append(m.fields, rawField{name: name, raw: []byte(name + ": " + value + "\r\n")})
}

// remove drops every field of that name.
func (m *rawMessage) remove(name string) {
	out := m.fields[:0]
	for i, f := range m.fields {
		if strings.EqualFold(f.name, name) {
			if i == m.fromIndex {
				m.fromIndex = -1
			}
			continue
		}
		if i == m.fromIndex {
			m.fromIndex = len(out)
		}
		out = append(out, f)
	}
	m.fields = out
}

// setFrom rewrites the From line, or adds one at the top of the header.
// mail.Address.String quotes the name and Q-encodes it when not ASCII.
func (m *rawMessage) setFrom(a *mail.Address) {
	f := rawField{name: "From", raw: []byte("From: " + a.String() + "\r\n")}
	if m.fromIndex >= 0 {
		m.fields[m.fromIndex] = f
		return
	}
	m.fields = append([]rawField{f}, m.fields...)
	m.fromIndex = 0
}

// subject returns the decoded Subject for the outbox's listing.
func (m *rawMessage) subject() string {
	for _, f := range m.fields {
		if strings.EqualFold(f.name, "Subject") {
			v := f.value()
			if dec, err := wordDecoder.DecodeHeader(v); err == nil {
				v = dec
			}
			return strings.ToValidUTF8(v, "\uFFFD")
		}
	}
	return ""
}

// bytes renders the message: the header fields, the empty line, the body.
func (m *rawMessage) bytes() []byte {
	n := 2 + len(m.body)
	for _, f := range m.fields {
		n += len(f.raw)
	}
	out := make([]byte, 0, n)
	for _, f := range m.fields {
		out = append(out, f.raw...)
	}
	out = append(out, '\r', '\n')
	return append(out, m.body...)
}

// crlf turns bare LF and bare CR into CRLF in one pass; a message that has
// CRLF line endings only is returned as it is.
func crlf(b []byte) []byte {
	bare := false
	for i, c := range b {
		if (c == '\n' && (i == 0 || b[i-1] != '\r')) || (c == '\r' && (i+1 == len(b) || b[i+1] != '\n')) {
			bare = true
			break
		}
	}
	if !bare {
		return b
	}
	out := make([]byte, 0, len(b)+len(b)/32+2)
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '\r':
			out = append(out, '\r', '\n')
			if i+1 < len(b) && b[i+1] == '\n' {
				i++
			}
		case '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
	}
	return out
}
