package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/status"
)

const statusDescription = `Print the status of running servers: build, config hash, tenants, the policy
in force, the xDS snapshot and each connected Envoy (acked version, last NACK),
and the last error of every reloader. It reads GET /debug/status on each admin
HTTP address: those given with -addr, else xds.http and authz.http of the config.`

// addrList is a repeatable (and comma-separated) flag.
type addrList []string

func (a *addrList) String() string { return strings.Join(*a, ",") }
func (a *addrList) Set(s string) error {
	*a = append(*a, splitList(s)...)
	return nil
}

// runStatus is `kailash status`.
func runStatus(ctx context.Context, args []string, w io.Writer) error {
	fs := newFlagSetUsage("status", "[-addr URL ... | -c kailash.yaml] [-json]", statusDescription, w)
	var addrs addrList
	var path string
	var asJSON bool
	var timeout time.Duration
	fs.Var(&addrs, "addr", "admin HTTP address or URL of a server (host:port or http://host:port[/debug/status]); repeatable")
	fs.StringVar(&path, "c", "kailash.yaml", "config file naming xds.http and authz.http (when no -addr)")
	fs.StringVar(&path, "config", "kailash.yaml", "config file (same as -c)")
	fs.BoolVar(&asJSON, "json", false, "print the reports as a JSON array")
	fs.DurationVar(&timeout, "timeout", 5*time.Second, "time allowed for each server to answer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("status: unexpected argument %q", fs.Arg(0))
	}
	urls, err := statusURLs(addrs, path)
	if err != nil {
		return err
	}
	var reports []status.Report
	var errs []error
	for _, u := range urls {
		r, err := fetchStatus(ctx, u, timeout)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		reports = append(reports, r)
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if reports == nil {
			reports = []status.Report{}
		}
		if err := enc.Encode(reports); err != nil {
			return err
		}
	} else {
		for i, r := range reports {
			if i > 0 {
				fmt.Fprintln(w)
			}
			printStatus(w, r)
		}
	}
	return errors.Join(errs...)
}

// statusURLs are the /debug/status URLs to read: -addr's, else the
// config's admin addresses.
func statusURLs(addrs []string, path string) ([]string, error) {
	if len(addrs) == 0 {
		cfg, err := config.Load(path)
		if err != nil {
			return nil, err
		}
		for _, hp := range []config.HostPort{cfg.XDS.HTTP, cfg.Authz.HTTP} {
			if !hp.IsZero() {
				addrs = append(addrs, dialable(hp))
			}
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("status: %s sets neither xds.http nor authz.http: give -addr", path)
		}
	}
	urls := make([]string, 0, len(addrs))
	for _, a := range addrs {
		if !strings.Contains(a, "://") {
			a = "http://" + a
		}
		if u := strings.TrimSuffix(a, "/"); strings.Count(u, "/") == 2 { // scheme://host[:port]: no path
			a = u + status.Path
		}
		urls = append(urls, a)
	}
	return urls, nil
}

// dialable is a listen address as a client reaches it: an unspecified IP
// (0.0.0.0, ::) means this host.
func dialable(hp config.HostPort) string {
	if ap, ok := hp.AddrPort(); ok && ap.Addr().IsUnspecified() {
		lo := netip.MustParseAddr("127.0.0.1")
		if ap.Addr().Is6() {
			lo = netip.IPv6Loopback()
		}
		return netip.AddrPortFrom(lo, ap.Port()).String()
	}
	return net.JoinHostPort(hp.Host(), strconv.Itoa(int(hp.Port())))
}

func fetchStatus(ctx context.Context, url string, timeout time.Duration) (status.Report, error) {
	var r status.Report
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return r, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return r, fmt.Errorf("status: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return r, fmt.Errorf("status: %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("status: %s: %s", url, resp.Status)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("status: %s: not a status report: %w", url, err)
	}
	return r, nil
}

// printStatus prints one report for people.
func printStatus(w io.Writer, r status.Report) {
	fmt.Fprintf(w, "%s %s (revision %s, %s) at %s\n", r.Component, r.Build.Version, r.Build.Revision, r.Build.GoVersion, stamp(r.Time))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintf(tw, "  config\tsha256 %s\n", r.ConfigHash)
	if s := r.Snapshot; s != nil {
		types := make([]string, 0, len(s.Resources))
		for typ, n := range s.Resources {
			types = append(types, fmt.Sprintf("%s %d", shortType(typ), n))
		}
		sort.Strings(types)
		fmt.Fprintf(tw, "  snapshot\t%s published %s (%s)\n", s.Version, stamp(s.PublishedAt), strings.Join(types, ", "))
	}
	for i, p := range []*status.Policy{r.Policy, r.Shadow} {
		if p != nil {
			fmt.Fprintf(tw, "  %s\trevision %s from %s (%s), loaded %s\n", []string{"policy", "shadow"}[i], p.Revision, p.Source, p.Decision, stamp(p.LoadedAt))
		}
	}
	more := ""
	if r.Tenants.Truncated {
		more = fmt.Sprintf(" (first %d listed)", len(r.Tenants.List))
	}
	fmt.Fprintf(tw, "  tenants\t%d%s\n", r.Tenants.Count, more)
	for _, t := range r.Tenants.List {
		state := "active"
		if !t.Active {
			state = "INACTIVE"
		}
		d := strings.Join(t.Domains, ",")
		if t.MoreDomains > 0 {
			d += fmt.Sprintf(" +%d", t.MoreDomains)
		}
		fmt.Fprintf(tw, "    %s\t%s\t%s\tplan=%s\tfeatures=%s\tidentity=%s\n", t.ID, state, d, dash(t.Plan), dash(strings.Join(t.Features, ",")), dash(strings.Join(t.Identity, ",")))
	}
	if e := r.Envoys; e != nil {
		fmt.Fprintf(tw, "  envoys\t%d\n", e.Count)
		for _, n := range e.List {
			sync := "in sync"
			if !n.InSync {
				sync = "NOT in sync"
			}
			fmt.Fprintf(tw, "    %s\tacked %s\t%s\tsince %s\tACKs %d NACKs %d\n", n.NodeID, dash(n.AckedVersion), sync, stamp(n.ConnectedSince), n.ACKs, n.NACKs)
			if l := n.LastNACK; l != nil {
				fmt.Fprintf(tw, "      last NACK\t%s %s refused %s: %s\n", stamp(l.At), shortType(l.TypeURL), dash(l.Version), l.Message)
			}
		}
	}
	fmt.Fprintf(tw, "  reloaders\t%d\n", len(r.Reloaders))
	for _, l := range r.Reloaders {
		state := "ok, last success " + stamp(l.LastOK)
		if l.Failing {
			state = "FAILING"
		}
		fmt.Fprintf(tw, "    %s\t%s", l.Name, state)
		if l.LastError != "" {
			fmt.Fprintf(tw, "\tlast error %s (%d failures): %s", stamp(l.ErrorAt), l.Failures, l.LastError)
		}
		fmt.Fprintln(tw)
	}
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shortType is a type URL's last name: Listener, Cluster, ...
func shortType(typeURL string) string {
	return typeURL[strings.LastIndex(typeURL, ".")+1:]
}
