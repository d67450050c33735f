package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

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
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err, limit)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return apperr.New(apperr.ErrInvalid, "invalid_json", "the body must hold exactly one JSON object")
	}
	return nil
}

func jsonError(err error, limit int64) error {
	var (
		maxErr    *http.MaxBytesError
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
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

func jsonKind(e *json.UnmarshalTypeError) string {
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
