// Package apperr holds the few error kinds that cross package lines and the
// one error type that carries what an API client is told: a stable code, a
// human message and, for bad input, the field at fault. The api package maps
// kinds to HTTP statuses in one place; detail meant for logs stays in the
// wrapped error and is never sent to clients.
package apperr

import (
	"errors"
	"fmt"
	"time"
)

// Kinds. Test with errors.Is.
var (
	ErrInvalid         = errors.New("invalid input")           // 400
	ErrUnauthenticated = errors.New("unauthenticated")         // 401
	ErrForbidden       = errors.New("forbidden")               // 403
	ErrNotFound        = errors.New("not found")               // 404
	ErrConflict        = errors.New("conflict")                // 409
	ErrTooLarge        = errors.New("too large")               // 413
	ErrUnprocessable   = errors.New("unprocessable")           // 422: well-formed but refused, e.g. a failed check
	ErrRateLimited     = errors.New("rate limited")            // 429
	ErrUnavailable     = errors.New("temporarily unavailable") // 503
)

// Error is an error a client may see.
type Error struct {
	Kind    error  // one of the kinds above
	Code    string // stable, machine-readable, snake_case
	Message string // human, safe to show
	Field   string // the input field at fault, if any
	Err     error  // the cause, for logs only
	// Detail is an optional value sent with the error (e.g. a check report).
	Detail any
	// RetryAfter, with ErrRateLimited, says when to try again.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	msg := e.Message
	if e.Field != "" {
		msg = e.Field + ": " + msg
	}
	if e.Err != nil {
		return msg + ": " + e.Err.Error()
	}
	return msg
}

// Unwrap exposes both the kind and the cause to errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// Invalid reports bad input in field.
func Invalid(field, code, format string, args ...any) *Error {
	return &Error{Kind: ErrInvalid, Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// NotFound reports a missing object. The message is the same for an object
// that exists but belongs to someone else.
func NotFound(what string) *Error {
	return &Error{Kind: ErrNotFound, Code: "not_found", Message: what + " not found"}
}

// Conflict reports a state that forbids the request.
func Conflict(code, format string, args ...any) *Error {
	return &Error{Kind: ErrConflict, Code: code, Message: fmt.Sprintf(format, args...)}
}

// New returns an Error of any kind.
func New(kind error, code, format string, args ...any) *Error {
	return &Error{Kind: kind, Code: code, Message: fmt.Sprintf(format, args...)}
}

// As returns the *Error in err's chain, if any.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
