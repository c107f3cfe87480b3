package devtoken

import (
	"crypto"
	"encoding/base64"
)

const cryptoSHA256 = crypto.SHA256

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
