package xds

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/kailash-gw/kailash/xds/translate"
)

// simStream plays go-control-plane's delta server for one stream and type
// against a cache: the subscription, the watch, what the client holds.
type simStream struct {
	t      *testing.T
	c      cachev3.ConfigWatcher
	typ    string
	sub    stream.Subscription
	ch     chan cachev3.DeltaResponse
	cancel func()
	nonce  int
	have   map[string]string // what the client holds: name → version
	first  bool
}

func newSimStream(t *testing.T, c cachev3.ConfigWatcher, typ string, subscribe []string) *simStream {
	s := &simStream{t: t, c: c, typ: typ, ch: make(chan cachev3.DeltaResponse, 16), have: map[string]string{}, first: true}
	s.request(subscribe, nil)
	return s
}

// request sends a request (the first, a subscription change or an ACK of
// the last response) as the server would pass it on.
func (s *simStream) request(subscribe, unsubscribe []string) {
	req := &cachev3.DeltaRequest{Node: &corev3.Node{Id: "n"}, TypeUrl: s.typ,
		ResourceNamesSubscribe: subscribe, ResourceNamesUnsubscribe: unsubscribe}
	if s.first {
		s.sub = stream.NewDeltaSubscription(subscribe, unsubscribe, nil, true)
		s.first = false
	} else {
		req.ResponseNonce = strconv.Itoa(s.nonce)
		if s.cancel != nil {
			s.cancel()
		}
		s.sub.UpdateResourceSubscriptions(subscribe, unsubscribe)
	}
	if !s.sub.IsWildcard() {
		for _, name := range unsubscribe { // an Envoy drops what it no longer subscribes to
			delete(s.have, name)
		}
	}
	var err error
	if s.cancel, err = s.c.CreateDeltaWatch(req, s.sub, s.ch); err != nil {
		s.t.Fatal(err)
	}
}

// drain takes the responses pending, ACKing each (which may bring
// another), and returns them as "+name@version" and "-name", one sorted
// list per response.
func (s *simStream) drain() [][]string {
	var out [][]string
	for {
		select {
		case r := <-s.ch:
			msg, err := r.GetDeltaDiscoveryResponse()
			if err != nil {
				s.t.Fatal(err)
			}
			var got []string
			for _, res := range msg.GetResources() {
				got = append(got, "+"+res.GetName()+"@"+res.GetVersion())
				s.have[res.GetName()] = res.GetVersion()
			}
			for _, name := range msg.GetRemovedResources() {
				got = append(got, "-"+name)
				delete(s.have, name)
			}
			slices.Sort(got)
			out = append(out, got)
			s.nonce++
			s.sub.SetReturnedResources(r.GetReturnedResources())
			s.request(nil, nil)
		default:
			return out
		}
	}
}

func testRoute(name string, rev int) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{Name: name, Domains: []string{fmt.Sprintf("%s-%d", name, rev)}}}}
}

func testCluster(name string, rev int) *clusterv3.Cluster {
	return &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(time.Duration(1+rev%7) * time.Second)}
}

// TestDeltaCacheMatchesSnapshotCache drives go-control-plane's
// SnapshotCache and deltaCache with the same snapshots (patched, and built
// whole) and the same streams (wildcard, named, subscribing and
// unsubscribing as they go): every response must carry the same resources
// and removals, and each stream must end up holding the snapshot's
// resources it subscribes to. Most answers must come from change sets.
func TestDeltaCacheMatchesSnapshotCache(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { testDeltaCacheMatches(t, seed) })
	}
}

func testDeltaCacheMatches(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 2))
	ref := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	ours := newDeltaCache(ref)
	ours.keep = 16 // the lagging stream falls behind it

	routes := map[string]int{} // name → revision
	clusters := map[string]int{}
	for i := range 40 {
		routes[fmt.Sprintf("r%02d", i)] = 0
		if i%2 == 0 {
			clusters[fmt.Sprintf("c%02d", i)] = 0
		}
	}
	build := func() *snapshot {
		res := &translate.Resources{}
		for _, n := range slices.Sorted(maps.Keys(routes)) {
			res.Routes = append(res.Routes, testRoute(n, routes[n]))
		}
		for _, n := range slices.Sorted(maps.Keys(clusters)) {
			res.Clusters = append(res.Clusters, testCluster(n, clusters[n]))
		}
		s, err := indexSnapshot(res, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	var cur *snapshot
	publish := func(s *snapshot) {
		s.version = s.sum.hash()[:16]
		if err := ref.SetSnapshot(t.Context(), "n", s); err != nil {
			t.Fatal(err)
		}
		ours.publish(s, s.from, s.changes)
		s.from, s.changes = nil, nil
		cur = s
	}
	publish(build())

	type pair struct{ ref, ours *simStream }
	var streams []pair
	open := func(typ string, subscribe []string) {
		streams = append(streams, pair{newSimStream(t, ref, typ, subscribe), newSimStream(t, ours, typ, subscribe)})
	}
	open(resource.RouteType, nil)                         // legacy wildcard
	open(resource.ClusterType, []string{"*"})             // explicit wildcard
	open(resource.RouteType, []string{"r01", "r02", "x"}) // by name, one never there
	open(resource.ClusterType, []string{"c00", "c04"})
	open(resource.RouteType, nil) // lagging: answers only every 40th step

	compare := func(step int) {
		t.Helper()
		for i, p := range streams {
			if i == 4 && step%40 != 0 {
				continue
			}
			a, b := p.ref.drain(), p.ours.drain()
			if !slices.EqualFunc(a, b, slices.Equal) {
				t.Fatalf("step %d stream %d: SnapshotCache sent %v, deltaCache %v", step, i, a, b)
			}
			if !maps.Equal(p.ref.have, p.ours.have) {
				t.Fatalf("step %d stream %d: clients hold %v and %v", step, i, p.ref.have, p.ours.have)
			}
		}
	}
	compare(0)

	name := func(prefix string) string { return fmt.Sprintf("%s%02d", prefix, rng.IntN(50)) }
	for step := 1; step <= 400; step++ { // 400: a multiple of 40, so all drain at the end
		switch op := rng.IntN(10); {
		case op < 6: // an edit: patched or rebuilt
			var changes []change
			for range 1 + rng.IntN(3) {
				n, c := name("r"), name("c")
				switch rng.IntN(3) {
				case 0:
					delete(routes, n)
					changes = append(changes, change{typ: routeIdx, name: n})
				default:
					routes[n]++
					r := testRoute(n, routes[n])
					b, _ := cachev3.MarshalResource(r)
					changes = append(changes, change{typ: routeIdx, name: n, r: r, version: cachev3.HashResource(b)})
				}
				if rng.IntN(2) == 0 {
					if _, ok := clusters[c]; ok && rng.IntN(2) == 0 {
						delete(clusters, c)
						changes = append(changes, change{typ: clusterIdx, name: c})
					} else {
						clusters[c]++
						r := testCluster(c, clusters[c])
						b, _ := cachev3.MarshalResource(r)
						changes = append(changes, change{typ: clusterIdx, name: c, r: r, version: cachev3.HashResource(b)})
					}
				}
			}
			if rng.IntN(4) == 0 {
				publish(build())
			} else {
				next := cur.patch(changes)
				if whole := build(); next.sum != whole.sum {
					t.Fatalf("step %d: patched snapshot differs from the rebuilt one", step)
				}
				publish(next)
			}
		case op < 9: // a named stream (un)subscribes
			i := 2 + rng.IntN(2)
			prefix := "r"
			if i == 3 {
				prefix = "c"
			}
			sub, unsub := []string{name(prefix)}, []string{name(prefix)}
			if rng.IntN(2) == 0 {
				sub = nil
			}
			streams[i].ref.request(sub, unsub)
			streams[i].ours.request(sub, unsub)
		default: // a wildcard stream unsubscribes one name explicitly
			i := rng.IntN(2)
			prefix := []string{"r", "c"}[i]
			n := []string{name(prefix)}
			streams[i].ref.request(nil, n)
			streams[i].ours.request(nil, n)
		}
		compare(step)
	}
	// Each stream holds exactly the snapshot's resources it subscribes to
	// (a client forgets those it unsubscribes from itself).
	for i, p := range streams {
		want, have := map[string]string{}, map[string]string{}
		typ := cachev3.GetResponseType(p.ours.typ)
		in := func(n string) bool {
			_, ok := p.ours.sub.SubscribedResources()[n]
			return ok || p.ours.sub.IsWildcard()
		}
		for n, v := range cur.versions[typ] {
			if in(n) {
				want[n] = v
			}
		}
		for n, v := range p.ours.have {
			if in(n) {
				have[n] = v
			}
		}
		if !maps.Equal(have, want) {
			t.Errorf("stream %d holds %v, want %v", i, p.ours.have, want)
		}
	}
	full, changed := ours.counts()
	t.Logf("deltaCache: %d full comparisons, %d from change sets", full, changed)
	if full > 5+400/40 || changed < 400 {
		t.Errorf("deltaCache compared in full %d times, from change sets %d: want change sets to answer nearly all", full, changed)
	}
}

// TestDeltaCacheFanout is the fanout, in process: 5,000 route
// configurations, 20 streams each holding all of them; one changes. Every
// stream is sent that one resource alone, marshalled once for all of them,
// and no full comparison is made after the streams' first.
func TestDeltaCacheFanout(t *testing.T) {
	res := &translate.Resources{}
	for i := range 5000 {
		res.Routes = append(res.Routes, testRoute(fmt.Sprintf("r%05d", i), 0))
	}
	snap, err := indexSnapshot(res, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap.version = "v1"
	c := newDeltaCache(cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil))
	c.publish(snap, nil, nil)
	var ss []*simStream
	for range 20 {
		s := newSimStream(t, c, resource.RouteType, nil)
		if got := s.drain(); len(got) != 1 || len(got[0]) != 5000 {
			t.Fatalf("initial sync: %d responses", len(got))
		}
		ss = append(ss, s)
	}
	full0, _ := c.counts()
	r := testRoute("r00123", 1)
	b, _ := cachev3.MarshalResource(r)
	next := snap.patch([]change{{typ: routeIdx, name: "r00123", r: r, version: cachev3.HashResource(b)}})
	next.version = "v2"
	c.publish(next, next.from, next.changes)
	var first []byte
	for i, s := range ss {
		select {
		case resp := <-s.ch:
			msg, err := resp.GetDeltaDiscoveryResponse()
			if err != nil {
				t.Fatal(err)
			}
			if len(msg.GetResources()) != 1 || msg.GetResources()[0].GetName() != "r00123" || len(msg.GetRemovedResources()) != 0 || msg.GetSystemVersionInfo() != "v2" {
				t.Fatalf("stream %d sent %d resources (%v), removed %v, version %s", i, len(msg.GetResources()), msg.GetResources(), msg.GetRemovedResources(), msg.GetSystemVersionInfo())
			}
			got := msg.GetResources()[0].GetResource().GetValue()
			if first == nil {
				first = got
			} else if &first[0] != &got[0] {
				t.Fatalf("stream %d: the resource was marshalled again", i)
			}
			var back routev3.RouteConfiguration
			if err := proto.Unmarshal(got, &back); err != nil || !proto.Equal(&back, r) {
				t.Fatalf("stream %d: resource %v (%v)", i, &back, err)
			}
			s.nonce++
			s.sub.SetReturnedResources(resp.GetReturnedResources())
			s.request(nil, nil) // the ACK: nothing more to send
			if len(s.ch) != 0 {
				t.Fatalf("stream %d: a response to the ACK", i)
			}
		default:
			t.Fatalf("stream %d: no response to the edit", i)
		}
	}
	if full, _ := c.counts(); full != full0 {
		t.Fatalf("%d full comparisons for a one-resource edit", full-full0)
	}
	if n := len(c.watches); n != len(ss) {
		t.Fatalf("%d watches open after the ACKs, want %d", n, len(ss))
	}
}
