package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	jsonv1 "github.com/go-json-experiment/json/v1"

	"github.com/mailsync/mailsync/internal/apperr"
)

// defaultBodyLimit caps a JSON request body.
const defaultBodyLimit = 1 << 20

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(true)
	_ = enc.Encode(v)
}

// decodeJSON reads one JSON object into v: at most limit bytes, no unknown
// fields, nothing after it. Errors name the field when one is at fault.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, limit int64) error {
	if limit <= 0 {
		limit = defaultBodyLimit
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		return apperr.New(apperr.ErrInvalid, "unsupported_media_type", "the body must be application/json")
	}
	// The whole body, then one Unmarshal: with encoding/json's v1
	// semantics (case-insensitive names, its error types), by the v2
	// implementation, which decodes a 10 KB text about twice as fast
	// (docs/benchmarks.md, "Outbox throughput").
	var buf bytes.Buffer
	if r.ContentLength > 0 && r.ContentLength <= limit {
		buf.Grow(int(r.ContentLength))
	}
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit)); err != nil {
		return jsonError(err, limit)
	}
	if len(bytes.TrimSpace(buf.Bytes())) == 0 {
		return jsonError(io.EOF, limit)
	}
	if err := jsonv2.Unmarshal(buf.Bytes(), v, jsonv1.DefaultOptionsV1(), jsonv2.RejectUnknownMembers(true)); err != nil {
		return jsonError(err, limit)
	}
	return nil
}

func jsonError(err error, limit int64) error {
	var (
		maxErr    *http.MaxBytesError
		syntaxErr *jsonv1.SyntaxError
		typeErr   *jsonv1.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &maxErr):
		return apperr.New(apperr.ErrTooLarge, "body_too_large", "the body is larger than %d bytes", limit)
	case errors.Is(err, io.EOF):
		return apperr.New(apperr.ErrInvalid, "invalid_json", "the body is empty; a JSON object is required")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return apperr.New(apperr.ErrInvalid, "invalid_json", "the body ends in the middle of the JSON object")
	case errors.As(err, &syntaxErr):
		return apperr.New(apperr.ErrInvalid, "invalid_json", "the body is not valid JSON (at byte %d)", syntaxErr.Offset)
	case errors.As(err, &typeErr):
		field := typeErr.Field
		return &apperr.Error{Kind: apperr.ErrInvalid, Code: "invalid_type", Field: field,
			Message: fmt.Sprintf("must be a JSON %s", jsonKind(typeErr))}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return &apperr.Error{Kind: apperr.ErrInvalid, Code: "unknown_field", Field: field,
			Message: "this field is not known"}
	default:
		var ae *apperr.Error
		if errors.As(err, &ae) {
			return ae
		}
		return apperr.New(apperr.ErrInvalid, "invalid_json", "the body could not be read as the expected JSON object")
	}
}

func jsonKind(e *jsonv1.UnmarshalTypeError) string {
	switch e.Type.Kind().String() {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "slice", "array":
		return "array"
	case "struct", "map":
		return "object"
	default:
		return "number"
	}
}
