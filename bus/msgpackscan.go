package bus

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// checkMsgpackLengths walks one msgpack value in data without decoding it
// and refuses any array, map, string, binary or extension whose declared
// length cannot fit in what is left of data. msgpack/v5 (v5.4.1) allocates
// a slice of the declared length before reading a single element (its
// alloc limit is never applied: decode_slice.go tests a flag against 1), so
// 14 bytes declaring an array of 0xdddddddd elements made the decoder ask
// for 3.7 TB and the process died: "fatal error: runtime: out of memory",
// which no recover catches (FuzzDecodeMsgpack found it). With this check a
// value can declare at most as many elements as it has bytes left.
func checkMsgpackLengths(data []byte) error {
	pos, pending := 0, 1
	for pending > 0 {
		if pos >= len(data) {
			return errors.New("msgpack: unexpected end of data")
		}
		c := data[pos]
		pos++
		pending--
		var n, skip int // n: items that follow (array/map); skip: bytes of payload
		switch {
		case c <= 0x7f || c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
		case c >= 0x80 && c <= 0x8f:
			n = 2 * int(c&0x0f)
		case c >= 0x90 && c <= 0x9f:
			n = int(c & 0x0f)
		case c >= 0xa0 && c <= 0xbf:
			skip = int(c & 0x1f)
		default:
			var size, mult, extra int // length field bytes; items per count; bytes after the length
			lengthOf := false
			switch c {
			case 0xc4, 0xd9: // bin8, str8
				size, lengthOf = 1, true
			case 0xc5, 0xda:
				size, lengthOf = 2, true
			case 0xc6, 0xdb:
				size, lengthOf = 4, true
			case 0xc7: // ext8: length, type, data
				size, extra, lengthOf = 1, 1, true
			case 0xc8:
				size, extra, lengthOf = 2, 1, true
			case 0xc9:
				size, extra, lengthOf = 4, 1, true
			case 0xdc: // array16
				size, mult = 2, 1
			case 0xdd:
				size, mult = 4, 1
			case 0xde: // map16
				size, mult = 2, 2
			case 0xdf:
				size, mult = 4, 2
			case 0xca, 0xce, 0xd2:
				skip = 4
			case 0xcb, 0xcf, 0xd3:
				skip = 8
			case 0xcc, 0xd0:
				skip = 1
			case 0xcd, 0xd1:
				skip = 2
			case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16: type + data
				skip = 1 + 1<<(c-0xd4)
			default: // 0xc1: never used
				return fmt.Errorf("msgpack: invalid code %#x", c)
			}
			if size > 0 {
				if len(data)-pos < size {
					return errors.New("msgpack: unexpected end of data")
				}
				var l uint64
				switch size {
				case 1:
					l = uint64(data[pos])
				case 2:
					l = uint64(binary.BigEndian.Uint16(data[pos:]))
				case 4:
					l = uint64(binary.BigEndian.Uint32(data[pos:]))
				}
				pos += size
				if l > uint64(len(data)) { // also keeps the int conversions below in range
					return fmt.Errorf("msgpack: a length of %d in a %d-byte payload", l, len(data))
				}
				if lengthOf {
					skip = int(l) + extra
				} else {
					n = int(l) * mult
				}
			}
		}
		if skip > len(data)-pos {
			return fmt.Errorf("msgpack: %d bytes declared, %d left", skip, len(data)-pos)
		}
		pos += skip
		// Each item takes at least one byte.
		if n > len(data)-pos {
			return fmt.Errorf("msgpack: %d items declared, %d bytes left", n, len(data)-pos)
		}
		pending += n
	}
	return nil
}
