# Independent computation of key-hash v1 golden vectors from the spec in src/state/key_hash.rs.
# Run: python3 -m venv v && v/bin/pip install xxhash && v/bin/python tests/golden/key_hash_v1.py
import struct, math, xxhash
def kg(b): return xxhash.xxh64_intdigest(b) % 128
def i(v): return b'\x02' + struct.pack('>q', v)
def f(v):
    if math.isnan(v): bits = 0x7ff8000000000000
    elif v == 0.0: bits = 0
    else: bits = struct.unpack('>Q', struct.pack('>d', v))[0]
    return b'\x04' + struct.pack('>Q', bits)
def s(v): b = v.encode(); return b'\x05' + struct.pack('>Q', len(b)) + b
def by(b): return b'\x06' + struct.pack('>Q', len(b)) + b
def ts_ms(v): return b'\x07' + (v*1_000_000).to_bytes(16, 'big', signed=True)
def date(d): return b'\x08' + struct.pack('>q', d*86400000)
def dec(v, scale):
    while v != 0 and v % 10 == 0 and scale > -128:
        v = int(v/10); scale -= 1
    if v == 0: scale = 0
    return b'\x09' + v.to_bytes(16,'big',signed=True) + struct.pack('>h', scale)
I32MAX, I32MIN = 2**31-1, -2**31
I64MAX, I64MIN = 2**63-1, -2**63
out = {}
out['BIGINT'] = [kg(i(v)) for v in [0,1,-1,2,7,42,100,128,255,1000,65536,1000000,-1000000,I32MAX,I32MIN,1<<40,123456789012,-987654321098,I64MAX,I64MIN]]
out['INT'] = [kg(i(v)) for v in [0,1,-1,2,7,42,100,128,255,1000,65536,1000000,-1000000,I32MAX,I32MIN,12345,-54321,99999,31,17]]
out['STRING'] = [kg(s(v)) for v in ["", "a", "b", "ab", "ba", "customer-1", "customer-2", "customer-10", "Zürich", "東京", "emoji 🚀", " ", "null", "0", "1", "a somewhat longer key that spans more than sixteen bytes", "x"*300, "tab\tseparated", "line\nbreak", "UPPER"]]
out['DOUBLE'] = [kg(f(v)) for v in [0.0,-0.0,1.0,-1.0,0.5,1.5,3.25,100.0,1e-9,1e300,-1e300,2.2250738585072014e-308,math.inf,-math.inf,math.nan,math.pi,math.e,42.42,-7.125,65536.0]]
out['TIMESTAMP'] = [kg(ts_ms(1767225600000 + k*3600000 - 7*k*k)) for k in range(20)]
out['DATE'] = [kg(date(20000 + k*11 - 100)) for k in range(20)]
out['BOOL_NULL'] = [kg(b'\x01\x01'), kg(b'\x01\x00'), kg(b'\x00')]
out['BYTES'] = [kg(by(bytes(((j*37) + k) % 256 for j in range(k)))) for k in range(20)]
out['DECIMAL'] = [kg(dec((k-10)*12345 + k*k, 3)) for k in range(20)]
out['TWO_COLUMNS'] = [kg(i(k) + s("k%d" % (k % 3))) for k in range(20)]
for k, v in out.items():
    print(f"    const GOLDEN_{k}: [u32; {len(v)}] = {v};")
