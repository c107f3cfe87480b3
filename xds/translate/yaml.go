package translate

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"
)

// ToYAML renders resources as one YAML document with listeners, routes and
// clusters sections (and secrets, when there are any, with every private
// key replaced by a digest), for `kailash translate` and golden tests. Fields keep
// their proto order, map keys are sorted and Any values show their type URL,
// so the output is stable.
func ToYAML(r *Resources) ([]byte, error) {
	if r == nil {
		return nil, fmt.Errorf("translate: nil resources")
	}
	msgs := func(res []types.Resource) []proto.Message {
		out := make([]proto.Message, len(res))
		for i, r := range res {
			out[i] = r
		}
		return out
	}
	sections := []yamlSection{
		{"listeners", msgs(r.Listeners)},
		{"routes", msgs(r.Routes)},
		{"clusters", msgs(r.Clusters)},
	}
	if len(r.ScopedRoutes) > 0 {
		sections = append(sections, yamlSection{"scoped_routes", msgs(r.ScopedRoutes)})
	}
	if len(r.Secrets) > 0 {
		secrets, err := redactedSecrets(r.Secrets)
		if err != nil {
			return nil, err
		}
		sections = append(sections, yamlSection{"secrets", msgs(secrets)})
	}
	return protoSectionsYAML(sections)
}

// yamlSection is one top-level key of the rendering and its messages.
type yamlSection struct {
	name string
	msgs []proto.Message
}

// protoSectionsYAML renders sections as one block-YAML document, proto
// field names as keys (ToYAML, and ExtAuthzOnly for its pieces).
func protoSectionsYAML(sections []yamlSection) ([]byte, error) {
	doc := &yaml.Node{Kind: yaml.MappingNode}
	opts := protojson.MarshalOptions{UseProtoNames: true}
	for _, s := range sections {
		seq := &yaml.Node{Kind: yaml.SequenceNode}
		for _, m := range s.msgs {
			// protojson output is stable apart from whitespace, which the YAML
			// round trip discards.
			j, err := opts.Marshal(m)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.name, err)
			}
			var n yaml.Node
			if err := yaml.Unmarshal(j, &n); err != nil {
				return nil, fmt.Errorf("%s: %w", s.name, err)
			}
			plain(&n)
			seq.Content = append(seq.Content, n.Content[0])
		}
		doc.Content = append(doc.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: s.name}, seq)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// plain drops the JSON styles (quotes, flow collections) so the encoder
// picks block YAML; it still quotes any string that would read as another type.
func plain(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		plain(c)
	}
}

// redactedSecrets are copies of secrets whose private keys show only a
// digest (enough to see in a diff that a key changed).
func redactedSecrets(in []types.Resource) ([]types.Resource, error) {
	out := make([]types.Resource, 0, len(in))
	for _, r := range in {
		s, ok := r.(*tlsv3.Secret)
		if !ok {
			return nil, fmt.Errorf("secrets: unexpected %T", r)
		}
		s = proto.Clone(s).(*tlsv3.Secret)
		if c := s.GetTlsCertificate(); c != nil && c.GetPrivateKey() != nil {
			sum := sha256.Sum256(c.GetPrivateKey().GetInlineBytes())
			c.PrivateKey = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{
				InlineString: "[redacted sha256:" + hex.EncodeToString(sum[:8]) + "]",
			}}
		}
		out = append(out, s)
	}
	return out, nil
}
