package main

import (
	"strings"
	"testing"
)

// Every command and subcommand answers --help and -h with exit 0 and its
// usage on stdout: a "Usage: kailash NAME" line and each flag followed by
// a description.
func TestHelpEveryCommand(t *testing.T) {
	var names [][]string
	for _, c := range commands() {
		names = append(names, []string{c.name})
	}
	for _, c := range policyCommands() {
		names = append(names, []string{"policy", c.name})
	}
	for _, sub := range []string{"status", "add", "rotate"} {
		names = append(names, []string{"keys", sub})
	}
	names = append(names, []string{"certs", "dev"})
	// Commands whose flags the test expects to see described.
	hasFlags := map[string]bool{"up": true, "xds": true, "authz": true, "runner": true, "token": true, "validate": true,
		"translate": true, "bootstrap": true, "envoy": true, "certs": true, "certs dev": true, "keys status": true, "keys add": true,
		"keys rotate": true, "status": true, "policy test": true, "policy check": true, "policy eval": true, "policy build": true, "policy replay": true, "policy diff": true}
	for _, name := range names {
		for _, h := range []string{"--help", "-h"} {
			t.Run(strings.Join(name, "_")+h, func(t *testing.T) {
				out, errOut, code := runKailash(t, append(append([]string(nil), name...), h)...)
				if code != 0 {
					t.Fatalf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
				}
				full := strings.Join(name, " ")
				if !strings.Contains(out, "Usage: kailash "+full) && !strings.Contains(out, "Usage: kailash "+name[0]) {
					t.Fatalf("no usage line for %q on stdout:\n%s", full, out)
				}
				lines := strings.Split(out, "\n")
				flags := 0
				for i, l := range lines {
					if !strings.HasPrefix(l, "  -") {
						continue
					}
					flags++
					if i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "      ") || strings.TrimSpace(lines[i+1]) == "" {
						t.Errorf("flag %q has no description", strings.TrimSpace(l))
					}
				}
				if hasFlags[full] && flags == 0 {
					t.Errorf("no flags listed:\n%s", out)
				}
			})
		}
	}
}

// `kailash policy --help` lists the policy subcommands (it was "unknown
// command"); `kailash --help` lists the commands.
func TestHelpListsSubcommands(t *testing.T) {
	out, errOut, code := runKailash(t, "policy", "--help")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	for _, c := range policyCommands() {
		if !strings.Contains(out, "  "+c.name+" ") {
			t.Errorf("policy --help does not list %q:\n%s", c.name, out)
		}
	}
	out, _, code = runKailash(t, "--help")
	if code != 0 {
		t.Fatalf("kailash --help: exit %d", code)
	}
	for _, c := range commands() {
		if !strings.Contains(out, "  "+c.name+" ") {
			t.Errorf("--help does not list %q:\n%s", c.name, out)
		}
	}
}
