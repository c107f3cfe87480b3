// Package jsonapi is the JSON answers of kailash's admin APIs (the tenant
// admin API, the API keys admin API): bodies never cached, and errors as
// {"error": code, "message": text, "errors": [each problem], …}.
package jsonapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// Error is an answer other than 2xx.
type Error struct {
	Status int
	Code   string
	Msg    string
	Errs   []string       // each problem, when there are several
	Extra  map[string]any // more members of the body (the tenant API's "owner")
}

// Error is the message and, after it, each problem.
func (e *Error) Error() string {
	if len(e.Errs) > 0 {
		return e.Msg + ": " + strings.Join(e.Errs, "; ")
	}
	return e.Msg
}

// Fail is an Error of status and code with a formatted message.
func Fail(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Msg: fmt.Sprintf(format, args...)}
}

// WriteError writes e's body with its status.
func WriteError(w http.ResponseWriter, e *Error) {
	body := map[string]any{"error": e.Code, "message": e.Msg}
	if len(e.Errs) > 0 {
		body["errors"] = e.Errs
	}
	for k, v := range e.Extra {
		body[k] = v
	}
	Write(w, e.Status, body)
}

// Write writes v as JSON with status, marked not to be stored (answers
// may carry secrets shown once).
func Write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
