//! The eBPF instruction set: encoding (the kernel's `struct bpf_insn`: 8
//! bytes, `ld_imm64` takes two) and the semantics the verifier, the
//! interpreter and the JIT share (ALU results, byte swaps, jump conditions,
//! the stack size), so the three cannot disagree.

/// Bytes per instruction.
pub const INSN_SIZE: usize = 8;
/// Bytes of stack a program gets (r10 points at its end).
pub const STACK_SIZE: usize = 512;

// Classes.
/// Class: a wide load (`ld_imm64`).
pub const LD: u8 = 0x00;
/// Class: a load into a register.
pub const LDX: u8 = 0x01;
/// Class: a store of an immediate.
pub const ST: u8 = 0x02;
/// Class: a store of a register.
pub const STX: u8 = 0x03;
/// Class: 32-bit arithmetic.
pub const ALU: u8 = 0x04;
/// Class: 64-bit jumps, calls and exit.
pub const JMP: u8 = 0x05;
/// Class: 32-bit jumps.
pub const JMP32: u8 = 0x06;
/// Class: 64-bit arithmetic.
pub const ALU64: u8 = 0x07;

// Sizes.
/// Size: 4 bytes.
pub const W: u8 = 0x00;
/// Size: 2 bytes.
pub const H: u8 = 0x08;
/// Size: 1 byte.
pub const B: u8 = 0x10;
/// Size: 8 bytes.
pub const DW: u8 = 0x18;

// Modes.
/// Mode: immediate.
pub const IMM: u8 = 0x00;
/// Mode: packet absolute (classic BPF).
pub const ABS: u8 = 0x20;
/// Mode: packet indirect (classic BPF).
pub const IND: u8 = 0x40;
/// Mode: memory.
pub const MEM: u8 = 0x60;
/// Mode: memory, sign-extending load (ISA v4 `ldsx`: B, H and W only).
pub const MEMSX: u8 = 0x80;
/// Mode: atomic read-modify-write.
pub const ATOMIC: u8 = 0xc0;
/// Atomic operation flag (in imm): also load the old value into src.
pub const FETCH: i32 = 0x01;
/// Atomic operation (imm): exchange.
pub const XCHG: i32 = 0xe0 | FETCH;
/// Atomic operation (imm): compare r0 and exchange; r0 gets the old value.
pub const CMPXCHG: i32 = 0xf0 | FETCH;

// Source.
/// Source: the immediate.
pub const K: u8 = 0x00;
/// Source: the register.
pub const X: u8 = 0x08;

// ALU operations.
/// ALU: add.
pub const ADD: u8 = 0x00;
/// ALU: subtract.
pub const SUB: u8 = 0x10;
/// ALU: multiply.
pub const MUL: u8 = 0x20;
/// ALU: unsigned divide.
pub const DIV: u8 = 0x30;
/// ALU: or.
pub const OR: u8 = 0x40;
/// ALU: and.
pub const AND: u8 = 0x50;
/// ALU: shift left.
pub const LSH: u8 = 0x60;
/// ALU: logical shift right.
pub const RSH: u8 = 0x70;
/// ALU: negate.
pub const NEG: u8 = 0x80;
/// ALU: unsigned modulo.
pub const MOD: u8 = 0x90;
/// ALU: exclusive or.
pub const XOR: u8 = 0xa0;
/// ALU: move.
pub const MOV: u8 = 0xb0;
/// ALU: arithmetic shift right.
pub const ARSH: u8 = 0xc0;
/// ALU: byte swap.
pub const END: u8 = 0xd0;

// Jump operations.
/// Jump: always.
pub const JA: u8 = 0x00;
/// Jump: if equal.
pub const JEQ: u8 = 0x10;
/// Jump: if greater (unsigned).
pub const JGT: u8 = 0x20;
/// Jump: if greater or equal (unsigned).
pub const JGE: u8 = 0x30;
/// Jump: if any bit is set.
pub const JSET: u8 = 0x40;
/// Jump: if not equal.
pub const JNE: u8 = 0x50;
/// Jump: if greater (signed).
pub const JSGT: u8 = 0x60;
/// Jump: if greater or equal (signed).
pub const JSGE: u8 = 0x70;
/// Call a helper (or a bpf-to-bpf function).
pub const CALL: u8 = 0x80;
/// Return r0.
pub const EXIT: u8 = 0x90;
/// Jump: if less (unsigned).
pub const JLT: u8 = 0xa0;
/// Jump: if less or equal (unsigned).
pub const JLE: u8 = 0xb0;
/// Jump: if less (signed).
pub const JSLT: u8 = 0xc0;
/// Jump: if less or equal (signed).
pub const JSLE: u8 = 0xd0;

/// One decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    /// Opcode: class, size or operation, mode or source.
    pub op: u8,
    /// Destination register.
    pub dst: u8,
    /// Source register (or a pseudo source).
    pub src: u8,
    /// Offset (memory access, jump).
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

impl Insn {
    /// An instruction from its fields.
    pub const fn new(op: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            op,
            dst,
            src,
            off,
            imm,
        }
    }

    /// Decodes instruction `pc` of `prog` (which the caller bounds).
    #[inline(always)]
    pub fn at(prog: &[u8], pc: usize) -> Insn {
        let b = &prog[pc * INSN_SIZE..pc * INSN_SIZE + INSN_SIZE];
        Insn {
            op: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// The 8-byte encoding.
    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.op;
        b[1] = (self.src << 4) | (self.dst & 0x0f);
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }

    #[inline(always)]
    /// The instruction class (low three bits).
    pub fn class(&self) -> u8 {
        self.op & 0x07
    }

    /// Size in bytes of a load/store.
    #[inline(always)]
    pub fn size(&self) -> usize {
        match self.op & 0x18 {
            W => 4,
            H => 2,
            B => 1,
            _ => 8,
        }
    }
}

/// The encoding of a sequence of instructions.
pub fn encode(insns: &[Insn]) -> Vec<u8> {
    insns.iter().flat_map(|i| i.encode()).collect()
}

/// The operation's name, for messages.
pub fn alu_name(op: u8) -> &'static str {
    match op {
        ADD => "add",
        SUB => "sub",
        MUL => "mul",
        DIV => "div",
        OR => "or",
        AND => "and",
        LSH => "lsh",
        RSH => "rsh",
        NEG => "neg",
        MOD => "mod",
        XOR => "xor",
        ARSH => "arsh",
        END => "byte swap",
        _ => "?",
    }
}

/// `off` of a DIV or MOD that makes it signed (ISA v4 `sdiv`/`smod`).
pub const SIGNED_DIV: i16 = 1;

/// Is `i` ISA v4's `gotol` (JMP32 | JA: the offset is `imm`)?
pub fn is_gotol(i: &Insn) -> bool {
    i.op == (JMP32 | JA)
}

/// The exact result of `sdiv` (`op` DIV) or `smod` (MOD) on known operands,
/// as the kernel defines them: dividing by 0 gives 0 and the remainder by
/// 0 leaves the dividend; by -1, the quotient is the negation (wrapping:
/// MIN stays MIN) and the remainder 0. The 32-bit forms work on the low
/// halves and zero-extend.
pub fn alu_signed(op: u8, is64: bool, a: u64, b: u64) -> u64 {
    // The 32-bit forms' operands, sign-extended, divide alike in i64 (the
    // one overflow, MIN / -1, is the -1 arm).
    let (x, y) = if is64 {
        (a as i64, b as i64)
    } else {
        (a as u32 as i32 as i64, b as u32 as i32 as i64)
    };
    let r = match (op, y) {
        (DIV, 0) => 0,
        (MOD, 0) => x,
        (DIV, -1) => x.wrapping_neg(),
        (MOD, -1) => 0,
        (DIV, _) => x / y,
        _ => x % y,
    };
    if is64 { r as u64 } else { r as u32 as u64 }
}

/// The low `bits` (8, 16 or 32) of `v`, sign-extended to 64 bits (ISA v4's
/// `movsx` and `ldsx`).
pub fn sign_extend(v: u64, bits: u32) -> u64 {
    let sh = 64 - bits;
    (((v << sh) as i64) >> sh) as u64
}

/// The exact ALU result for known operands (the interpreter's semantics,
/// which are rbpf's and the kernel's: division by zero gives 0, modulo by
/// zero leaves the dividend). `op` is the operation nibble; byte swaps are
/// [`byte_swap`].
pub fn alu_exact(op: u8, is64: bool, a: u64, b: u64) -> u64 {
    if is64 {
        match op {
            ADD => a.wrapping_add(b),
            SUB => a.wrapping_sub(b),
            MUL => a.wrapping_mul(b),
            DIV => a.checked_div(b).unwrap_or(0),
            OR => a | b,
            AND => a & b,
            LSH => a.wrapping_shl(b as u32 & 63),
            RSH => a.wrapping_shr(b as u32 & 63),
            NEG => (a as i64).wrapping_neg() as u64,
            MOD => a.checked_rem(b).unwrap_or(a),
            XOR => a ^ b,
            ARSH => ((a as i64).wrapping_shr(b as u32 & 63)) as u64,
            _ => 0,
        }
    } else {
        let (x, y) = (a as u32, b as u32);
        (match op {
            ADD => x.wrapping_add(y),
            SUB => x.wrapping_sub(y),
            MUL => x.wrapping_mul(y),
            DIV => x.checked_div(y).unwrap_or(0),
            OR => x | y,
            AND => x & y,
            LSH => x.wrapping_shl(y & 31),
            RSH => x.wrapping_shr(y & 31),
            NEG => (x as i32).wrapping_neg() as u32,
            MOD => x.checked_rem(y).unwrap_or(x),
            XOR => x ^ y,
            ARSH => ((x as i32).wrapping_shr(y & 31)) as u32,
            _ => 0,
        }) as u64
    }
}

/// `le16/32/64` (source bit K) or `be16/32/64` (source bit X) of the
/// instruction opcode `insn_op`, on this little-endian host; in the ALU64
/// class (ISA v4 `bswap16/32/64`), an unconditional swap.
pub fn byte_swap(a: u64, bits: i32, insn_op: u8) -> u64 {
    let be = insn_op & X == X || insn_op & 0x07 == ALU64;
    match (bits, be) {
        (16, false) => a as u16 as u64,
        (32, false) => a as u32 as u64,
        (16, true) => (a as u16).swap_bytes() as u64,
        (32, true) => (a as u32).swap_bytes() as u64,
        (_, true) => a.swap_bytes(),
        _ => a,
    }
}

/// A conditional jump on known values (the interpreter's semantics too):
/// JMP32 compares the low 32 bits.
pub fn eval_jump(op: u8, a: u64, b: u64, is64: bool) -> bool {
    let (a, b) = if is64 {
        (a, b)
    } else {
        (a as u32 as u64, b as u32 as u64)
    };
    let (sa, sb) = if is64 {
        (a as i64, b as i64)
    } else {
        (a as u32 as i32 as i64, b as u32 as i32 as i64)
    };
    match op {
        JEQ => a == b,
        JNE => a != b,
        JGT => a > b,
        JGE => a >= b,
        JLT => a < b,
        JLE => a <= b,
        JSET => a & b != 0,
        JSGT => sa > sb,
        JSGE => sa >= sb,
        JSLT => sa < sb,
        JSLE => sa <= sb,
        _ => false,
    }
}
