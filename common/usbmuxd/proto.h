/* usbmuxd's wire protocol: the 16-byte header, requests, and the replies and
 * events a daemon sends (Result, DeviceList, Attached, Detached, Paired), in
 * version 0 (binary records) and version 1 (plist) alike. Pure: bytes in,
 * structures out and back; no sockets, no logging. Every plist body is
 * checked by the bounded guard before libplist parses it, so no input can
 * make a decode cost more than a small multiple of its size.
 *
 * Errors: 0, or a negative errno: -EMSGSIZE (a length outside the protocol's
 * bounds), -EPROTO (a body that does not say what its header promises, or
 * that libplist could not parse), -E2BIG (a plist the guard refuses:
 * expansion, cycles, depth, a NUL in the document or in a string, which
 * libplist's readers abort on; never pass it on, close its sender), -ENOMEM. */
#ifndef MUXSHIM_USBMUXD_PROTO_H
#define MUXSHIM_USBMUXD_PROTO_H

#include <plist/plist.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UMX_HDR_LEN 16u
#define UMX_MSG_MAX 65536u      /* usbmuxd's receive buffer: one whole request */
#define UMX_REPLY_MAX (1024u * 1024u) /* replies may be longer (a DeviceList of many) */
#define UMX_SERIAL_MAX 255u     /* v0 records carry char serial[256] */
#define UMX_DEVREC_LEN 268u     /* v0 DEVICE_ADD: u32 id, u16 product, serial[256], u16 pad, u32 location */
#define UMX_V0_CONNECT_LEN 8u   /* u32 device id, u16 port (network order), u16 reserved */

enum umx_version { UMX_V_BINARY = 0, UMX_V_PLIST = 1 };

enum umx_message {
	UMX_MSG_RESULT = 1,
	UMX_MSG_CONNECT = 2,
	UMX_MSG_LISTEN = 3,
	UMX_MSG_DEVICE_ADD = 4,
	UMX_MSG_DEVICE_REMOVE = 5,
	UMX_MSG_DEVICE_PAIRED = 6,
	UMX_MSG_PLIST = 8,
};

enum umx_result {
	UMX_RESULT_OK = 0,
	UMX_RESULT_BADCOMMAND = 1,
	UMX_RESULT_BADDEV = 2,
	UMX_RESULT_CONNREFUSED = 3,
	UMX_RESULT_BADVERSION = 6,
};

/* Pair-record commands answer with an errno value: ENOENT for "no record". */
#define UMX_RESULT_NO_RECORD 2u

struct umx_hdr {
	uint32_t length; /* whole message, header included */
	uint32_t version;
	uint32_t message;
	uint32_t tag;
};

void umx_hdr_put(uint8_t out[UMX_HDR_LEN], const struct umx_hdr *h);
/* -EMSGSIZE when the length is below 16 or above UMX_MSG_MAX (usbmuxd
 * closes the connection then: so must a peer of it). */
int umx_hdr_get(const uint8_t in[UMX_HDR_LEN], struct umx_hdr *h);
/* The same for what an upstream sends: up to UMX_REPLY_MAX. */
int umx_hdr_get_reply(const uint8_t in[UMX_HDR_LEN], struct umx_hdr *h);

enum umx_req {
	UMX_REQ_LIST_DEVICES,
	UMX_REQ_LISTEN,
	UMX_REQ_CONNECT,
	UMX_REQ_READ_BUID,
	UMX_REQ_READ_PAIR_RECORD,
	UMX_REQ_SAVE_PAIR_RECORD,
	UMX_REQ_DELETE_PAIR_RECORD,
	UMX_REQ_LIST_LISTENERS,
	UMX_REQ_OTHER, /* a MessageType this module does not know, or another v0 message */
	UMX_REQ_NTYPES
};
const char *umx_req_name(enum umx_req t);

struct umx_request {
	enum umx_req type;
	uint32_t version;
	uint32_t message;
	uint32_t tag;
	bool has_device_id;       /* Connect; SavePairRecord names a device too */
	uint32_t device_id;
	uint16_t port;            /* Connect: the device port, host order */
	uint32_t malformed;       /* Connect without what it needs: the Result usbmuxd
				   * answers (BADDEV, BADCOMMAND), else 0 */
	bool has_record_id;       /* Read/Save/DeletePairRecord */
	char record_id[UMX_SERIAL_MAX + 1];
	plist_t dict;             /* v1: the parsed body, for forwarding: owned, or
				   * borrowed from a memo (umx_request_decode_memo) */
	bool dict_borrowed;
};

/* Decodes one complete request (header already checked by umx_hdr_get).
 * A v1 body that is not a dict with a string MessageType is -EPROTO, as is a
 * v0 Connect shorter than its record. On success the caller owns rq->dict. */
int umx_request_decode(const struct umx_hdr *h, const uint8_t *body, size_t len,
		       struct umx_request *rq);
void umx_request_free(struct umx_request *rq);

/* The questions clients repeat (ListDevices, ReadBUID, Listen,
 * ListListeners) come byte for byte the same each time from a given client
 * library: only the tag in the header changes. A memo keeps the decode of
 * the last few such plist bodies, so that asking again costs a compare.
 * Bounded: UMX_MEMO_SLOTS bodies of at most UMX_MEMO_BODY_MAX bytes, the
 * oldest replaced first. Zeroed to start; umx_memo_free. */
#define UMX_MEMO_SLOTS 8u
#define UMX_MEMO_BODY_MAX 1024u

struct umx_memo_slot {
	uint32_t version, message;
	size_t len;
	uint8_t *body;             /* NULL: empty */
	struct umx_request rq;     /* its decode; the memo owns rq.dict */
};

struct umx_memo {
	struct umx_memo_slot slot[UMX_MEMO_SLOTS];
	unsigned next;             /* the slot replaced next */
	uint64_t hits, misses;
};

/* As umx_request_decode, through m: the same result for the same bytes.
 * A request found in m, or kept there, has its dict borrowed from m (left
 * alone by umx_request_free): valid until the next call with m. */
int umx_request_decode_memo(struct umx_memo *m, const struct umx_hdr *h, const uint8_t *body,
			    size_t len, struct umx_request *rq);
void umx_memo_free(struct umx_memo *m);

/* A device as the table holds it. props is the Properties dict as the
 * upstream sent it (owned), so that replies carry every key it had; it is
 * NULL for a device learnt from a v0 record. */
struct umx_device {
	uint32_t id;
	uint16_t product_id;
	uint32_t location_id;
	bool network;             /* ConnectionType "Network" (Wi-Fi) */
	char serial[UMX_SERIAL_MAX + 1];
	plist_t props;
};

void umx_device_free(struct umx_device *d);
int umx_device_copy(struct umx_device *dst, const struct umx_device *src);

/* What an upstream sent: a reply to a request, or a Listen event. */
enum umx_ev_kind {
	UMX_EV_RESULT,
	UMX_EV_ATTACHED,
	UMX_EV_DETACHED,
	UMX_EV_PAIRED,
	UMX_EV_DEVICE_LIST,  /* the reply to ListDevices; devices in list/n */
	UMX_EV_BUID,         /* the reply to ReadBUID; in text */
	UMX_EV_OTHER,        /* any other plist reply (dict kept) */
};

struct umx_event {
	enum umx_ev_kind kind;
	uint32_t version;
	uint32_t tag;
	uint32_t result;          /* RESULT */
	uint32_t device_id;       /* DETACHED, PAIRED (and ATTACHED: dev.id) */
	struct umx_device dev;    /* ATTACHED */
	struct umx_device *list;  /* DEVICE_LIST */
	size_t n;
	size_t skipped;           /* DEVICE_LIST entries left out: no serial */
	char text[UMX_SERIAL_MAX + 1]; /* BUID */
	plist_t dict;             /* v1: the parsed body (owned) */
};

#define UMX_LIST_MAX 1024u    /* devices accepted in one DeviceList */

int umx_event_decode(const struct umx_hdr *h, const uint8_t *body, size_t len,
		     struct umx_event *ev);
void umx_event_free(struct umx_event *ev);

/* Encoders: a whole message (header and body) in *out (malloc'd, the
 * caller frees), its length in *len. They build the same keys, in the same
 * order and the same plist format (XML) as usbmuxd, so a client sees the
 * bytes it would see from usbmuxd itself. */
int umx_encode_result(uint32_t version, uint32_t tag, uint32_t number, uint8_t **out, size_t *len);
int umx_encode_device_list(uint32_t tag, const struct umx_device *devs, size_t n,
			   uint8_t **out, size_t *len);
/* Listen events (tag 0), in the subscriber's version. */
int umx_encode_attached(uint32_t version, const struct umx_device *d, uint8_t **out, size_t *len);
int umx_encode_detached(uint32_t version, uint32_t device_id, uint8_t **out, size_t *len);
int umx_encode_paired(uint32_t version, uint32_t device_id, uint8_t **out, size_t *len);
int umx_encode_buid(uint32_t tag, const char *buid, uint8_t **out, size_t *len);
/* Any dict as a v1 message (requests of the test tools, forwarded requests). */
int umx_encode_plist(uint32_t tag, plist_t dict, uint8_t **out, size_t *len);

#endif
