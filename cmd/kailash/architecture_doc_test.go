package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestArchitectureDocMatchesGoList: the package table of docs/architecture.md
// states, for every package of the module, exactly the project packages it
// imports, as `go list` reports them. A new package, a new import or a
// dropped one fails here until the doc says so.
func TestArchitectureDocMatchesGoList(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	cmd := exec.Command(goBin, "list", "-f", `{{.ImportPath}}|{{len .GoFiles}}|{{join .Imports " "}}`, "./...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const module = "github.com/kailash-gw/kailash/"
	actual := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.SplitN(line, "|", 3)
		if len(parts) != 3 || parts[1] == "0" { // test-only folders have no package to describe
			continue
		}
		pkg := strings.TrimPrefix(parts[0], module)
		var imps []string
		for _, imp := range strings.Fields(parts[2]) {
			if strings.HasPrefix(imp, module) {
				imps = append(imps, strings.TrimPrefix(imp, module))
			}
		}
		slices.Sort(imps)
		actual[pkg] = imps
	}

	documented, testOnly := readPackageTable(t, "../../docs/architecture.md")
	for pkg, imps := range actual {
		want, ok := documented[pkg]
		switch {
		case testOnly[pkg]:
		case !ok:
			t.Errorf("docs/architecture.md: package %s is missing from the table (it imports %v)", pkg, imps)
		case !slices.Equal(want, imps):
			t.Errorf("docs/architecture.md: %s imports %v, the table says %v", pkg, imps, want)
		}
	}
	for pkg := range documented {
		if _, ok := actual[pkg]; !ok {
			t.Errorf("docs/architecture.md: the table lists %s, which is not a package of the module", pkg)
		}
	}
}

var (
	backticked    = regexp.MustCompile("`([^`]+)`")
	parenthesized = regexp.MustCompile(`\([^)]*\)`)
)

// readPackageTable parses the "| package | imports (project only) |" table:
// each row's first cell names packages in backticks (brace lists allowed:
// `extauthz/{oidc,session}`), the second their imports ("—" for none).
// The "test only:" row's packages are returned in testOnly.
func readPackageTable(t *testing.T, path string) (documented map[string][]string, testOnly map[string]bool) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	documented, testOnly = map[string][]string{}, map[string]bool{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "| package | imports") {
			in = true
			continue
		}
		if !in || strings.HasPrefix(line, "|---") {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 2 {
			t.Fatalf("%s: malformed row %q", path, line)
		}
		var pkgs []string
		names := parenthesized.ReplaceAllString(cells[0], "") // descriptions
		for _, m := range backticked.FindAllStringSubmatch(names, -1) {
			pkgs = append(pkgs, expandBraces(m[1])...)
		}
		if strings.Contains(cells[0], "test only") {
			for _, p := range pkgs {
				testOnly[p] = true
			}
			continue
		}
		var imps []string
		if s := strings.TrimSpace(cells[1]); s != "—" && s != "" {
			for _, spec := range splitTopLevel(s) {
				imps = append(imps, expandBraces(spec)...)
			}
		}
		slices.Sort(imps)
		for _, p := range pkgs {
			if _, dup := documented[p]; dup {
				t.Errorf("%s: package %s has two rows", path, p)
			}
			documented[p] = imps
		}
	}
	if len(documented) == 0 {
		t.Fatalf("%s: no package table found", path)
	}
	return documented, testOnly
}

// splitTopLevel splits "a, b/{c,d}, e" at the commas outside braces.
func splitTopLevel(s string) []string {
	var out []string
	depth, start := 0, 0
	for i, r := range s {
		switch r {
		case '{':
			depth++
		case '}':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	return append(out, strings.TrimSpace(s[start:]))
}

// expandBraces turns "internal/{config,wire}" into internal/config and
// internal/wire (one brace group, as the table uses).
func expandBraces(s string) []string {
	open, end := strings.IndexByte(s, '{'), strings.IndexByte(s, '}')
	if open < 0 || end < open {
		return []string{s}
	}
	var out []string
	for _, alt := range strings.Split(s[open+1:end], ",") {
		out = append(out, s[:open]+strings.TrimSpace(alt)+s[end+1:])
	}
	return out
}
