package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/i18n"
	"github.com/mailsync/mailsync/internal/users"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static/*
var staticFS embed.FS

// pageTemplate is one page: the layout, the shared partials and the page's
// own file, parsed together once.
type pageTemplate struct {
	t *template.Template
}

// partials are the files every page is parsed with.
var partials = []string{"templates/layout.html", "templates/partials.html"}

func mustParsePages() map[string]*pageTemplate {
	files, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		panic(err)
	}
	pages := map[string]*pageTemplate{}
	for _, f := range files {
		if f == partials[0] || f == partials[1] {
			continue
		}
		name := strings.TrimSuffix(path.Base(f), ".html")
		t := template.New(name).Funcs(funcs)
		t = template.Must(t.ParseFS(templateFS, append(append([]string{}, partials...), f)...))
		pages[name] = &pageTemplate{t: t}
	}
	return pages
}

var funcs = template.FuncMap{
	"field": newField,
	"fid":   fieldID,
	"add":   func(a, b int) int { return a + b },
	"join":  strings.Join,
	"list":  func(v ...string) []string { return v },
}

// asset is one embedded static file with its content hash.
type asset struct {
	body  []byte
	ctype string
	hash  string
}

func mustLoadAssets() map[string]asset {
	out := map[string]asset{}
	entries, err := fs.ReadDir(staticFS, "static")
	if err != nil {
		panic(err)
	}
	for _, e := range entries {
		b, err := staticFS.ReadFile("static/" + e.Name())
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(b)
		ct := mime.TypeByExtension(path.Ext(e.Name()))
		if ct == "" {
			ct = "application/octet-stream"
		}
		out[e.Name()] = asset{body: b, ctype: ct, hash: hex.EncodeToString(sum[:6])}
	}
	return out
}

// static serves an embedded file. With the current hash in ?v= it may be
// cached for a year; without, it is revalidated.
func (s *server) static(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w)
	a, ok := s.assets[r.PathValue("name")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", a.ctype)
	if r.URL.Query().Get("v") == a.hash {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	w.Header().Set("ETag", `"`+a.hash+`"`)
	if r.Header.Get("If-None-Match") == `"`+a.hash+`"` {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	_, _ = w.Write(a.body)
}

// page is what every template gets: the layout's needs and the page's own
// data.
type page struct {
	Lang         i18n.Lang
	Title        string
	User         *users.User
	CSRF         string
	Nav          string
	Path         string // this page's path and query, for the language switch
	Flashes      []string
	Assets       map[string]string // file → its URL with the hash
	HasUsersPage bool
	Data         any
	now          time.Time
}

// T returns the web catalogue's text for key ("accounts.title" is
// "web.accounts.title").
func (p *page) T(key string, args ...any) string {
	return i18n.T(p.Lang, "web."+key, args...)
}

// Other is the language the switch offers.
func (p *page) Other() i18n.Lang {
	if p.Lang == i18n.Ru {
		return i18n.En
	}
	return i18n.Ru
}

// Ago says how long ago t was ("7 minutes ago"); t is a time.Time or a
// *time.Time.
func (p *page) Ago(t any) string {
	tt, ok := timeOf(t)
	if !ok {
		return p.T("ago.never")
	}
	return ago(p.Lang, p.now.Sub(tt))
}

// Time formats a time for a table cell (UTC).
func (p *page) Time(t any) string {
	tt, ok := timeOf(t)
	if !ok {
		return ""
	}
	return tt.UTC().Format("2006-01-02 15:04 UTC")
}

// ISO is the machine-readable form of a time for <time datetime>.
func (p *page) ISO(t any) string {
	tt, ok := timeOf(t)
	if !ok {
		return ""
	}
	return tt.UTC().Format(time.RFC3339)
}

func timeOf(t any) (time.Time, bool) {
	switch v := t.(type) {
	case time.Time:
		return v, !v.IsZero()
	case *time.Time:
		if v == nil || v.IsZero() {
			return time.Time{}, false
		}
		return *v, true
	}
	return time.Time{}, false
}

// pageWith hands a partial both the page and its own value.
type pageWith struct {
	P *page
	V any
}

// With pairs the page with one value, or with a list of values (the
// partial takes them with index).
func (p *page) With(v ...any) pageWith {
	if len(v) == 1 {
		return pageWith{P: p, V: v[0]}
	}
	return pageWith{P: p, V: v}
}

// Step names a check step in the page's language; step is an
// outgoing.Step or its string.
func (p *page) Step(step any) string {
	name := fmt.Sprint(step)
	key := "web.step." + name
	if i18n.Has(key) {
		return i18n.T(p.Lang, key)
	}
	return name
}

// Label is the catalogue's name for a value of a kind ("sync", "pending"
// is "web.sync.pending"), or the value itself when the catalogue has none.
// value is a string or a string type such as outgoing.Security.
func (p *page) Label(kind string, value any) string {
	v := fmt.Sprint(value)
	key := "web." + kind + "." + strings.TrimPrefix(v, "\\")
	if v != "" && i18n.Has(key) {
		return i18n.T(p.Lang, key)
	}
	return v
}

// render writes a page. It renders into a buffer first so that a template
// error is a clean 500.
func (s *server) render(w http.ResponseWriter, r *http.Request, rc *reqCtx, status int, name, titleKey string, data any) error {
	pt, ok := s.pages[name]
	if !ok {
		return fmt.Errorf("no page template %q", name)
	}
	p := s.newPage(r, rc, titleKey, data)
	var buf bytes.Buffer
	if err := pt.t.ExecuteTemplate(&buf, "layout", p); err != nil {
		return fmt.Errorf("render %s: %w", name, err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
	return nil
}

// renderFragment writes one named template of a page (no layout): the
// answer of the Check buttons' fetch.
func (s *server) renderFragment(w http.ResponseWriter, r *http.Request, rc *reqCtx, status int, pageName, tmpl string, data any) error {
	pt, ok := s.pages[pageName]
	if !ok {
		return fmt.Errorf("no page template %q", pageName)
	}
	p := s.newPage(r, rc, "", data)
	var buf bytes.Buffer
	if err := pt.t.ExecuteTemplate(&buf, tmpl, p); err != nil {
		return fmt.Errorf("render %s/%s: %w", pageName, tmpl, err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
	return nil
}

func (s *server) newPage(r *http.Request, rc *reqCtx, titleKey string, data any) *page {
	p := &page{Lang: rc.lang, CSRF: rc.csrf, Path: r.URL.RequestURI(), Data: data, now: s.opts.Now(),
		Assets: map[string]string{}, HasUsersPage: s.admin != nil}
	if titleKey != "" {
		p.Title = i18n.T(rc.lang, "web."+titleKey)
	}
	for name, a := range s.assets {
		p.Assets[name] = "/static/" + name + "?v=" + a.hash
	}
	if rc.sess != nil {
		u := rc.user
		p.User = &u
		p.Flashes = s.sessions.takeFlashes(rc.sess.id)
	}
	if r.Method != http.MethodGet {
		p.Path = r.URL.Path
	}
	p.Nav = navOf(r.URL.Path)
	return p
}

func navOf(p string) string {
	for _, n := range []string{"accounts", "mailboxes", "senders", "compose", "log", "users"} {
		if p == "/"+n || strings.HasPrefix(p, "/"+n+"/") {
			return n
		}
	}
	return ""
}

type errorView struct {
	Status  int
	Message string
}

// renderError writes the error page with a catalogue message.
func (s *server) renderError(w http.ResponseWriter, r *http.Request, rc *reqCtx, status int, key string) {
	s.renderErrorText(w, r, rc, status, i18n.T(rc.lang, "web."+key))
}

func (s *server) renderErrorText(w http.ResponseWriter, r *http.Request, rc *reqCtx, status int, msg string) {
	if err := s.render(w, r, rc, status, "error", "error.title", errorView{Status: status, Message: msg}); err != nil {
		s.log.ErrorContext(r.Context(), "render error page", "error", err)
		http.Error(w, http.StatusText(status), status)
	}
}

// errorText is a service error in the page's language: the catalogue's
// text for its code when there is one ("web.error.<code>"), else the
// service's own (English) message.
func errorText(lang i18n.Lang, e *apperr.Error) string {
	key := "web.error." + e.Code
	if i18n.Has(key) {
		return i18n.T(lang, key)
	}
	return e.Message
}

// ago says how long d is, in words, with the language's plural forms.
func ago(lang i18n.Lang, d time.Duration) string {
	switch {
	case d < time.Minute:
		return i18n.T(lang, "web.ago.now")
	case d < time.Hour:
		n := int(d / time.Minute)
		return i18n.T(lang, "web.ago.minutes."+plural(lang, n), n)
	case d < 48*time.Hour:
		n := int(d / time.Hour)
		return i18n.T(lang, "web.ago.hours."+plural(lang, n), n)
	default:
		n := int(d / (24 * time.Hour))
		return i18n.T(lang, "web.ago.days."+plural(lang, n), n)
	}
}

// plural is the CLDR plural category of n: English one/many (the
// catalogue's "many" is English "other"), Russian one/few/many.
func plural(lang i18n.Lang, n int) string {
	if lang != i18n.Ru {
		if n == 1 {
			return "one"
		}
		return "many"
	}
	switch {
	case n%10 == 1 && n%100 != 11:
		return "one"
	case n%10 >= 2 && n%10 <= 4 && (n%100 < 12 || n%100 > 14):
		return "few"
	default:
		return "many"
	}
}

// formState is a form being shown again: the values entered (never a
// password), the errors by field and the summary.
type formState struct {
	Values  url.Values
	Errors  map[string]string
	Summary string
}

func newForm() *formState { return &formState{Values: url.Values{}, Errors: map[string]string{}} }

// formFrom copies a posted form, without passwords, tokens and the CSRF
// token.
func formFrom(r *http.Request) *formState {
	f := newForm()
	for k, v := range r.PostForm {
		if k == "csrf" || k == "token" || strings.HasSuffix(k, "password") {
			continue
		}
		f.Values[k] = v
	}
	return f
}

// Get returns a field's value.
func (f *formState) Get(name string) string {
	if f == nil {
		return ""
	}
	return f.Values.Get(name)
}

// Checked reports whether a checkbox is on.
func (f *formState) Checked(name string) bool {
	v := f.Get(name)
	return v == "on" || v == "true" || v == "1"
}

// Is reports whether a field has the value v (for <option selected>).
func (f *formState) Is(name, v string) bool { return f.Get(name) == v }

// Has reports whether the multi-valued field holds v.
func (f *formState) Has(name, v string) bool {
	if f == nil {
		return false
	}
	for _, x := range f.Values[name] {
		if x == v {
			return true
		}
	}
	return false
}

// Err returns the error of a field.
func (f *formState) Err(name string) string {
	if f == nil {
		return ""
	}
	return f.Errors[name]
}

// HasErrors reports whether any field has an error or there is a summary.
func (f *formState) HasErrors() bool { return f != nil && (len(f.Errors) > 0 || f.Summary != "") }

// setError puts a service error on the form: on its field when the form
// has one, in the summary otherwise. fields maps service field names to
// form field names when they differ.
func (f *formState) setError(lang i18n.Lang, err error, fields map[string]string) bool {
	e, ok := apperr.As(err)
	if !ok {
		return false
	}
	msg := errorText(lang, e)
	field := e.Field
	if i := strings.IndexByte(field, '['); i > 0 {
		field = field[:i] // "to[0]": the form has one field for the list
	}
	if alias, ok := fields[field]; ok {
		field = alias
	}
	if field != "" {
		f.Errors[field] = msg
		f.Summary = i18n.T(lang, "web.form.fix")
	} else {
		f.Summary = msg
	}
	return true
}

// fieldView is one labelled input, for the "input" partial.
type fieldView struct {
	Name         string
	ID           string
	Label        string
	Type         string
	Value        string
	Err          string
	Hint         string
	Required     bool
	Autocomplete string
	Placeholder  string
	InputMode    string
	ReadOnly     bool
	Min, Max     string
}

// newField builds an input for a template: field $ "host" "accounts.host"
// "text" "required" "autocomplete=off" "hint=<key>" …
// The value comes from the form; password fields are always empty.
func newField(p *page, f *formState, name, labelKey, typ string, opts ...string) fieldView {
	v := fieldView{Name: name, ID: fieldID(name), Label: p.T(labelKey), Type: typ,
		Err: f.Err(name)}
	if typ != "password" {
		v.Value = f.Get(name)
	}
	for _, o := range opts {
		k, val, _ := strings.Cut(o, "=")
		switch k {
		case "required":
			v.Required = true
		case "readonly":
			v.ReadOnly = true
		case "autocomplete":
			v.Autocomplete = val
		case "hint":
			v.Hint = p.T(val)
		case "placeholder":
			v.Placeholder = p.T(val)
		case "inputmode":
			v.InputMode = val
		case "min":
			v.Min = val
		case "max":
			v.Max = val
		case "id":
			v.ID = val
		}
	}
	return v
}

// fieldID is the HTML id of a form field's input.
func fieldID(name string) string {
	return "f-" + strings.NewReplacer(".", "-", "_", "-", "[", "-", "]", "").Replace(name)
}

// atoiField parses a number field; ok is false (and the form has the
// error) when it is not a whole number.
func atoiField(lang i18n.Lang, f *formState, name string, raw string) (int, bool) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return 0, true
	}
	n, err := strconv.Atoi(raw)
	if err != nil {
		f.Errors[name] = i18n.T(lang, "web.error.invalid_number")
		f.Summary = i18n.T(lang, "web.form.fix")
		return 0, false
	}
	return n, true
}
