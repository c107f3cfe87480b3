package testenv

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Children are the live (not zombie) processes whose parent is pid and for
// which match, given the command name and the NUL-separated command line,
// reports true. Read from /proc: tests use it to prove a child (Envoy, a
// sandbox worker) is gone.
func Children(pid int, match func(comm, cmdline string) bool) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	parent := strconv.Itoa(pid)
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(s[end+1:])
		if len(f) < 2 || f[0] == "Z" || f[1] != parent {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if match(s[open+1:end], string(cmdline)) {
			out = append(out, n)
		}
	}
	return out, nil
}
