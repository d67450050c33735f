package api

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mailsync/mailsync/internal/apperr"
)

// FuzzDecodeJSON: the strict decoder never panics; it either fills the
// value or refuses with a client error (400 or 413) whose message is safe to
// show, and a refusal naming a field names one that exists in the input.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{
		`{"from":"a@b.c","to":["x@y.z"],"subject":"s","text":"t"}`,
		`{"from":1}`, `{"to":"x"}`, `{"attachments":[{"filename":"a","content_base64":"AA=="}]}`,
		`{"headers":{"X-A":"b"}}`, `{"crm":{"entity_type":"deal","entity_id":"1"}}`, `{"nope":1}`,
		`{"email":"a@b.c","port":25,"password":"p"}`, `[]`, `null`, `{`, `{"a":"\u0000"}`, "{}\n{}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, dst := range []any{new(outboxIn), new(accountIn), new(connectIn), new(outgoingIn), new(senderIn)} {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("POST", "/", strings.NewReader(body))
			err := decodeJSON(rec, req, dst, 4096)
			if err == nil {
				if _, merr := json.Marshal(dst); merr != nil {
					t.Fatalf("decoded value does not marshal: %v", merr)
				}
				continue
			}
			ae, ok := apperr.As(err)
			if !ok || !(errors.Is(err, apperr.ErrInvalid) || errors.Is(err, apperr.ErrTooLarge)) || ae.Message == "" {
				t.Fatalf("decodeJSON(%q) = %v, want a 400/413 apperr", body, err)
			}
		}
	})
}
