package xds

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kailash-gw/kailash/internal/status"
)

// maxTrackedNodes bounds the nodes the tracker keeps (and the node label
// values of the ACK/NACK counters): a fleet is bounded, a plaintext ADS port
// may be sent any node id. Nodes beyond it are counted as otherNode.
const maxTrackedNodes = 1000

// otherNode is the node label of ACKs and NACKs of untracked nodes.
const otherNode = "_other"

// maxPending bounds the responses a stream remembers per type while
// waiting for their ACK (Envoy answers every response, in order).
const maxPending = 8

// tracker follows each connected Envoy: its streams, the version it last
// acked per type and its last NACK. ACKs and NACKs are told apart from the
// responses the stream was sent (by nonce), in both SotW and delta xDS.
// go-control-plane calls a stream's callbacks one at a time, different
// streams concurrently.
type tracker struct {
	now         func() time.Time
	acks, nacks *prometheus.CounterVec
	mu          sync.Mutex // guards the maps and everything they point to
	streams     map[int64]*trackedStream
	nodes       map[string]*status.Envoy
	nacked      map[string]map[string]bool // node → types whose last answer was a NACK
}

type trackedStream struct {
	node    string               // "" until a request names its node
	pending map[string][]sentMsg // type URL → responses not yet answered, oldest first
}

type sentMsg struct{ nonce, version string }

func newTracker(acks, nacks *prometheus.CounterVec) *tracker {
	return &tracker{now: time.Now, acks: acks, nacks: nacks,
		streams: map[int64]*trackedStream{}, nodes: map[string]*status.Envoy{}, nacked: map[string]map[string]bool{}}
}

// opened records a new stream.
func (t *tracker) opened(stream int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.streams[stream] = &trackedStream{pending: map[string][]sentMsg{}}
}

// closed forgets a stream; a node without streams left is no longer
// connected and is forgotten.
func (t *tracker) closed(stream int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.streams[stream]
	if !ok {
		return
	}
	delete(t.streams, stream)
	if n := t.nodes[st.node]; n != nil {
		if n.Streams--; n.Streams <= 0 {
			delete(t.nodes, st.node)
			delete(t.nacked, st.node)
		}
	}
}

// sent records a response on a stream (its nonce is set).
func (t *tracker) sent(stream int64, typeURL, nonce, version string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.streams[stream]
	if st == nil || nonce == "" {
		return
	}
	p := append(st.pending[typeURL], sentMsg{nonce: nonce, version: version})
	if len(p) > maxPending {
		p = p[len(p)-maxPending:]
	}
	st.pending[typeURL] = p
}

// request records a discovery request: an ACK when it answers a response
// of this stream (by nonce) without an error, a NACK when it carries one.
// node and cluster may be empty after the stream's first request. It
// returns the version refused ("" when not a NACK or unknown).
func (t *tracker) request(stream int64, node, cluster, typeURL, nonce, errMsg string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.streams[stream]
	if st == nil {
		return ""
	}
	n := t.attachLocked(st, node, cluster)
	if nonce == "" { // a subscription, not an answer
		return ""
	}
	version, found := "", false
	p := st.pending[typeURL]
	for i, m := range p {
		if m.nonce == nonce {
			version, found = m.version, true
			st.pending[typeURL] = p[i+1:]
			break
		}
	}
	label := otherNode
	if n != nil {
		label = n.NodeID
	}
	now := t.now().UTC()
	if errMsg != "" {
		t.nacks.WithLabelValues(label, typeURL).Inc()
		if n != nil {
			if t.nacked[label] == nil {
				t.nacked[label] = map[string]bool{}
			}
			t.nacked[label][typeURL] = true
			n.NACKs++
			n.LastNACK = &status.NACK{TypeURL: typeURL, Version: version, Message: status.Cut(errMsg), At: now}
		}
		return version
	}
	if !found {
		return "" // an answer to a response this process did not send (or forgot)
	}
	t.acks.WithLabelValues(label, typeURL).Inc()
	if n != nil {
		delete(t.nacked[label], typeURL)
		n.ACKs++
		if n.Acked == nil {
			n.Acked = map[string]string{}
		}
		n.Acked[typeURL] = version
		n.AckedVersion = version
	}
	return ""
}

// attachLocked ties the stream to its node on the stream's first request
// naming one; the node is nil when untracked (beyond maxTrackedNodes).
func (t *tracker) attachLocked(st *trackedStream, node, cluster string) *status.Envoy {
	if st.node == "" && node != "" {
		st.node = node
		n := t.nodes[node]
		if n == nil {
			if len(t.nodes) >= maxTrackedNodes {
				st.node = "\x00untracked"
				return nil
			}
			n = &status.Envoy{NodeID: node, Cluster: cluster, ConnectedSince: t.now().UTC()}
			t.nodes[node] = n
		}
		n.Streams++
	}
	return t.nodes[st.node]
}

// envoys is the report of the connected nodes against the snapshot
// version being served. A node is in sync when its latest ACK is of that
// version, no response to it awaits an answer and no type's last answer
// was a NACK. (Per type, acked versions may differ: delta xDS sends a type
// only when it changed.)
func (t *tracker) envoys(current string) *status.Envoys {
	t.mu.Lock()
	defer t.mu.Unlock()
	waiting := map[string]bool{}
	for _, st := range t.streams {
		for _, p := range st.pending {
			if len(p) > 0 {
				waiting[st.node] = true
			}
		}
	}
	out := &status.Envoys{Count: len(t.nodes), List: []status.Envoy{}}
	for id, n := range t.nodes {
		e := *n
		e.InSync = n.AckedVersion != "" && n.AckedVersion == current && !waiting[id] && len(t.nacked[id]) == 0
		if n.Acked != nil {
			e.Acked = make(map[string]string, len(n.Acked))
			for typ, v := range n.Acked {
				e.Acked[typ] = v
			}
		}
		if n.LastNACK != nil {
			c := *n.LastNACK
			e.LastNACK = &c
		}
		out.List = append(out.List, e)
	}
	slices.SortFunc(out.List, func(a, b status.Envoy) int { return strings.Compare(a.NodeID, b.NodeID) })
	if len(out.List) > status.MaxNodes {
		out.List, out.Truncated = out.List[:status.MaxNodes], true
	}
	return out
}
