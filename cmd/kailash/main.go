// Command kailash is Kailash Gateway's one binary.
//
//	kailash up        -c kailash.yaml   control plane + authz + runner + a child Envoy
//	kailash xds       -c kailash.yaml   the xDS control plane alone
//	kailash authz     -c kailash.yaml   the ext_authz server alone
//	kailash authz     --policy DIR|FILE|BUNDLE.tar.gz --decision envoy/authz/allow
//	                                    drop-in replacement for opa-envoy-plugin
//	kailash policy    test|check|eval|build|replay|diff [path ...]
//	kailash runner    -c kailash.yaml   the workflow runner alone
//	kailash ratelimit -c kailash.yaml   the global rate-limit service alone
//	kailash keys      status|add|rotate -c kailash.yaml   data keys at rest
//	kailash token     --tenant T --sub S --roles a,b [--ttl 1h]
//	kailash apikey    create|list|revoke|rotate -c kailash.yaml   tenants' API keys
//	kailash explain   ID                why a request was refused (decision or request id)
//	kailash validate  -c kailash.yaml   check config, policy and workflows offline
//	kailash translate -c kailash.yaml   print the Envoy resources the config becomes
//	kailash bootstrap -c kailash.yaml   print the Envoy bootstrap
//	kailash envoy     -c kailash.yaml   the pinned Envoy alone (containers)
//	kailash schema    [--markdown]      the JSON Schema of kailash.yaml (or its reference)
//	kailash status    [-addr URL | -c kailash.yaml] [-json]   what the running servers hold
//	kailash version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// version is set by the linker (-X main.version=...).
var version = "dev"

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout io.Writer) error
}

func commands() []command {
	return []command{
		{"up", "run the whole stack on this machine (Envoy included)", runUp},
		{"xds", "run the xDS control plane", runXDS},
		{"authz", "run the ext_authz server", runAuthz},
		{"runner", "run the workflow runner", runRunner},
		{"ratelimit", "run the global rate-limit service (envoy.service.ratelimit.v3)", runRateLimit},
		{"keys", "status, add or rotate the data keys of the runner's store", runKeys},
		{"apikey", "create, list, revoke or rotate tenants' API keys (service accounts)", runAPIKey},
		{"policy", "test, check, eval, build, replay or diff policy bundles", runPolicy},
		{"token", "mint a development bearer token", runToken},
		{"explain", "why was a request refused (by decision id or request id)", runExplain},
		{"validate", "check a config, its policy bundle and workflows", runValidate},
		{"schema", "print the JSON Schema of kailash.yaml (--markdown: the reference)", runSchema},
		{"translate", "print the Envoy resources for a config", runTranslate},
		{"bootstrap", "print the Envoy bootstrap for a config", runBootstrap},
		{"envoy", "run the pinned Envoy alone on the config's bootstrap, drained on SIGTERM", runEnvoy},
		{"certs", "write development mTLS certificates (certs dev --out DIR)", runCerts},
		{"status", "print the running servers' status (tenants, policy, Envoys, reloaders)", runStatus},
		{"version", "print the version", runVersion},
	}
}

func main() {
	sandboxWorkerDispatch()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitError is an error with its process exit code: 2 for `policy test`'s
// failing tests, as `opa test` exits. Other errors exit 1.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exitCode is the process exit code for run's error, printed to stderr.
// Asking for help (-h, --help) is a success.
func exitCode(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(stderr, "kailash:", err)
	if ee, ok := errors.AsType[*exitError](err); ok && ee.code != 0 {
		return ee.code
	}
	return 1
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return errors.New("a command is required")
		}
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			err := c.run(ctx, args[1:], stdout)
			if errors.Is(err, flag.ErrHelp) {
				return nil // the usage asked for is printed
			}
			return err
		}
	}
	usage(os.Stderr)
	return fmt.Errorf("unknown command %q", args[0])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Kailash Gateway: identity, policy and multi-tenancy in front of any backend, on Envoy.")
	fmt.Fprintln(w, "\nUsage: kailash <command> [flags]")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'kailash <command> -h' for a command's flags.")
}

// common flags of the server commands.
type serverFlags struct {
	config   string
	logLevel string
	logJSON  bool
}

func (f *serverFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.config, "c", "kailash.yaml", "config file")
	fs.StringVar(&f.config, "config", "kailash.yaml", "config file (same as -c)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&f.logJSON, "log-json", false, "log JSON lines instead of text")
}

func (f *serverFlags) logger() (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	o := &slog.HandlerOptions{Level: lv}
	if f.logJSON {
		return slog.New(slog.NewJSONHandler(os.Stderr, o)), nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, o)), nil
}

func newFlagSet(name string) *flag.FlagSet {
	return newFlagSetUsage(name, "[flags]", "", os.Stdout)
}

// newFlagSetUsage is a flag set whose usage is "Usage: kailash NAME
// SYNOPSIS", the description, then every flag with its description. Asked
// for (-h, --help), it goes to stdout; after a wrong flag, to stderr,
// below the error.
func newFlagSetUsage(name, synopsis, description string, stdout io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("kailash "+name, flag.ContinueOnError)
	out := &flagErrOutput{}
	fs.SetOutput(out)
	fs.Usage = func() {
		w := stdout
		if out.wrote {
			w = os.Stderr
		}
		fmt.Fprintln(w, strings.TrimSpace("Usage: kailash "+name+" "+synopsis))
		if description != "" {
			fmt.Fprintf(w, "\n%s\n", strings.TrimRight(description, "\n"))
		}
		printFlags(w, fs)
	}
	return fs
}

// printFlags lists fs's flags as users type them (-x, --long), each with
// its description and default.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	first := true
	fs.VisitAll(func(f *flag.Flag) {
		if first {
			fmt.Fprintln(w, "\nFlags:")
			first = false
		}
		kind, usage := flag.UnquoteUsage(f)
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		line := "  " + dash + f.Name
		if kind != "" {
			line += " " + kind
		}
		fmt.Fprintln(w, line)
		switch def := f.DefValue; {
		case def == "" || def == "false" || def == "0" || def == "0s" || def == "[]":
		case kind == "string":
			usage += fmt.Sprintf(" (default %q)", def)
		default:
			usage += " (default " + def + ")"
		}
		fmt.Fprintf(w, "      %s\n", strings.ReplaceAll(usage, "\n", "\n      "))
	})
}

// flagErrOutput is a flag set's output: the flag package writes to it only
// to report a parse error (before printing the usage).
type flagErrOutput struct{ wrote bool }

func (o *flagErrOutput) Write(p []byte) (int, error) {
	o.wrote = true
	return os.Stderr.Write(p)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func runVersion(_ context.Context, args []string, w io.Writer) error {
	fs := newFlagSetUsage("version", "", "Print kailash's version and the Envoy version it is built for.", w)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("version: unexpected argument %q", fs.Arg(0))
	}
	_, err := fmt.Fprintf(w, "kailash %s (envoy %s)\n", version, envoyVersion())
	return err
}
