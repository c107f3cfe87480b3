package config

import "time"

// PolicySigning requires policy bundles signed in OPA's bundle-signing
// format, verified with this public key.
type PolicySigning struct {
	// PublicKeyFile is a PEM public key (relative to the config file).
	PublicKeyFile string `yaml:"public_key_file"`
	// KeyID is the key's id (default "default"); Algorithm the JWS
	// algorithm (default RS256); Scope, when set, must match the signature.
	KeyID     string `yaml:"key_id"`
	Algorithm string `yaml:"algorithm"`
	Scope     string `yaml:"scope"`
}

// DecisionLogs choose where each policy decision is logged (any of the
// sinks) and which input paths are masked besides the defaults
// (Authorization and Cookie headers).
type DecisionLogs struct {
	Console       bool          `yaml:"console"`
	File          string        `yaml:"file"`
	MaxSizeMB     int           `yaml:"max_size_mb"`
	MaxBackups    int           `yaml:"max_backups"`
	URL           string        `yaml:"url"`
	BatchSize     int           `yaml:"batch_size"`
	FlushInterval time.Duration `yaml:"flush_interval"`
	Mask          []string      `yaml:"mask"`
	// MaskDecision is OPA's mask policy: the rule (path in the bundle,
	// default system/log/mask, as OPA's) whose value lists what to erase
	// or replace in each event (JSON pointers, or {"op","path","value"});
	// a bundle without the rule masks nothing more. "off" disables it.
	MaskDecision string `yaml:"mask_decision"`
	Buffer       int    `yaml:"buffer"`
}

// Enabled reports whether any sink is configured.
func (d DecisionLogs) Enabled() bool { return d.Console || d.File != "" || d.URL != "" }

// DecisionCache is the policy decision cache: decisions kept per bundle
// version and per value of exactly the input paths the policy reads. It is
// on by default, and caches only a bundle whose policy reads bounded input
// paths and calls no non-deterministic builtin (io.jwt.decode_verify
// entries end at the token's exp/nbf); other bundles bypass it, counted by
// reason in kailash_policy_decision_cache_bypass_total.
type DecisionCache struct {
	// Disabled turns the cache off.
	Disabled bool `yaml:"disabled"`
	// Size bounds the entries kept (least recently used go first; default
	// 10000, at most 1000000).
	Size int `yaml:"size"`
}

// DefaultDecisionCacheSize is policy.decision_cache.size when unset;
// MaxDecisionCacheSize bounds it.
const (
	DefaultDecisionCacheSize = 10000
	MaxDecisionCacheSize     = 1000000
)

// Entries is the cache's size, 0 when it is off.
func (d DecisionCache) Entries() int {
	switch {
	case d.Disabled:
		return 0
	case d.Size == 0:
		return DefaultDecisionCacheSize
	}
	return d.Size
}
