package status

import (
	"embed"
	"encoding/json"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/kailash-gw/kailash/internal/telemetry"
)

// Path is where the report is served on every admin HTTP port.
const Path = "/debug/status"

// BuildOf is the running binary's build.
func BuildOf() Build {
	return Build{Version: telemetry.Version(), Revision: telemetry.BuildRevision(), GoVersion: telemetry.GoVersion()}
}

//go:embed page.html.tmpl
var pageFS embed.FS

var page = template.Must(template.New("page.html.tmpl").Funcs(template.FuncMap{
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format(time.RFC3339)
	},
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return now.Sub(t).Round(time.Second).String() + " ago"
	},
	"join": strings.Join,
}).ParseFS(pageFS, "page.html.tmpl"))

// Handler serves GET Path: the report as JSON, or as an HTML page (which
// refreshes itself every 5 seconds) when the client prefers text/html —
// a browser — or asks ?format=html. ?format=json forces JSON.
func Handler(report func() Report) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rep := report()
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if wantsHTML(r) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			// The page loads nothing from anywhere; its one inline script
			// only re-fetches this page.
			w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'")
			if err := page.Execute(w, rep); err != nil {
				http.Error(w, "status page: "+err.Error(), http.StatusInternalServerError)
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	})
}

// wantsHTML: ?format decides; else text/html listed in Accept before any
// JSON type.
func wantsHTML(r *http.Request) bool {
	switch r.URL.Query().Get("format") {
	case "html":
		return true
	case "json":
		return false
	}
	acc := r.Header.Get("Accept")
	h := strings.Index(acc, "text/html")
	if h < 0 {
		return false
	}
	j := strings.Index(acc, "json")
	return j < 0 || h < j
}
