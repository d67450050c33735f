package api

import (
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/outgoing"
)

// submitRaw is POST /api/v1/outbox/raw: a whole RFC 5322 message as the
// body (Content-Type message/rfc822), its envelope recipients as repeated
// "rcpt" query parameters and, optionally, the envelope sender as "from"
// (used as the From of a message without one). It is what "mailsync
// sendmail" calls; the answer is the one of POST /api/v1/outbox.
func (s *Server) submitRaw(w http.ResponseWriter, r *http.Request) error {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "message/rfc822" {
		return apperr.New(apperr.ErrInvalid, "unsupported_media_type", "the body must be a message: Content-Type message/rfc822")
	}
	q := r.URL.Query()
	for k := range q {
		if k != "rcpt" && k != "from" {
			return &apperr.Error{Kind: apperr.ErrInvalid, Code: "unknown_field", Field: k, Message: "this query parameter is not known"}
		}
	}
	if len(q["from"]) > 1 {
		return apperr.Invalid("from", "repeated", "give at most one envelope sender")
	}
	// SubmitRaw reads at most one byte more than the limit; the cap here
	// stops a client that sends far more.
	body := &readErr{r: http.MaxBytesReader(w, r.Body, s.deps.Outgoing.Config().MaxMessageBytes+1)}
	var rcpts []string
	for _, v := range q["rcpt"] {
		// One parameter may list several addresses, as sendmail's arguments do.
		for a := range strings.SplitSeq(v, ",") {
			if a = strings.TrimSpace(a); a != "" {
				rcpts = append(rcpts, a)
			}
		}
	}
	m, err := s.deps.Outgoing.SubmitRaw(r.Context(), outgoingCaller(r), q.Get("from"), rcpts, body, outgoing.SubmitOptions{})
	if err != nil {
		if body.err != nil {
			return &apperr.Error{Kind: apperr.ErrInvalid, Code: "incomplete_body", Field: "body",
				Message: "the message could not be read to its end", Err: body.err}
		}
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"id": m.ID, "status": m.Status, "message_id": m.MessageID})
	return nil
}

// readErr remembers the error of the request body, so that a client that
// hung up is told apart from a failing service.
type readErr struct {
	r   io.Reader
	err error
}

func (b *readErr) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}
