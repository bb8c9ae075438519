package channelsredis

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/fernet/fernet-go"
)

// crypter seals and opens payloads with Fernet, keys derived from the
// configured secrets as channels_redis derives them: the SHA-256 digest
// of the secret's UTF-8 bytes is the 32-byte Fernet key (signing half
// first). The first key seals; every key opens, so keys can be rotated by
// putting the new key first and dropping the old one once no message
// sealed with it can still be waiting.
type crypter struct {
	keys []*fernet.Key
	ttl  time.Duration // 0: tokens of any age are accepted
}

// newCrypter returns nil when secrets is empty: no encryption.
func newCrypter(secrets []string, ttl time.Duration) (*crypter, error) {
	if len(secrets) == 0 {
		return nil, nil
	}
	c := &crypter{ttl: ttl}
	for i, s := range secrets {
		if s == "" {
			return nil, fmt.Errorf("channelsredis: symmetric encryption key %d is empty", i)
		}
		k := fernet.Key(sha256.Sum256([]byte(s)))
		c.keys = append(c.keys, &k)
	}
	return c, nil
}

func (c *crypter) seal(plain []byte) []byte {
	tok, err := fernet.EncryptAndSign(plain, c.keys[0])
	if err != nil {
		// Only a failing system random source gets here.
		panic("channelsredis: encrypting: " + err.Error())
	}
	return tok
}

var errDecrypt = errors.New("channelsredis: message could not be decrypted with any key (wrong key, or expired)")

func (c *crypter) open(tok []byte) ([]byte, error) {
	plain := fernet.VerifyAndDecrypt(tok, c.ttl, c.keys)
	if plain == nil {
		return nil, errDecrypt
	}
	return plain, nil
}
