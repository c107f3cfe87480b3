package oidc

import "time"

// Status is what a key source last did, for status pages.
type Status struct {
	Issuer string
	// URL is the JWKS (or discovery) URL being fetched.
	URL       string
	LastOK    time.Time // end of the last successful fetch (zero: none yet)
	LastError string    // the last failed fetch's error, kept after a success
	ErrorAt   time.Time
	Failures  int64
	Failing   bool // the last fetch failed
	Ready     bool // a usable key set is known
}

// Status reports the source's state.
func (k *Keys) Status() Status {
	k.mu.Lock()
	defer k.mu.Unlock()
	st := Status{Issuer: k.cfg.Issuer, URL: k.sourceURL(), LastOK: k.lastOK, ErrorAt: k.lastErrAt,
		Failures: k.failures, Failing: k.failing, Ready: k.usableLocked() != nil}
	if k.lastFail != nil {
		st.LastError = k.lastFail.Error()
	}
	return st
}
