// Where a new worker goes: which GPU(s) of the node, given what each device has free once the memory
// rbee's own workers hold or have reserved is counted (docs/gpu-nodes.md). Pure functions: the hive
// feeds them a snapshot, so two spawns placed one after the other always see each other's reservation.

import { RbeeError, type Backend, type DeviceInfo } from "../protocol";

/** A worker's claim on devices: what it was estimated to need (until it reports what it uses). */
export interface Reservation {
  workerId: string;
  backend: Backend;
  /** Device indices (within the backend) and the bytes held on each, in the same order. */
  devices: number[];
  bytes: number[];
  /** Whether the detection snapshot already saw this memory in use (the worker was ready before it). */
  seenByDriver: boolean;
}

/** A device as placement sees it: the driver's figures less rbee's own claims. */
export interface DeviceRoom {
  device: DeviceInfo;
  /** Bytes a new worker can use here. */
  free: number;
  reserved: number;
  workers: string[];
}

/**
 * Free memory per device. The driver's free figure already counts other users' memory and rbee's
 * loaded workers, but not workers still loading; total less rbee's claims counts rbee's own workers
 * even where a driver reports no usage (software Vulkan). The smaller of the two is what is left, and
 * never more than the node's per-device limit for rbee (`limitBytes`, for GPUs shared with others).
 */
export function deviceRooms(
  devices: DeviceInfo[],
  backend: Backend,
  reservations: Reservation[],
  limitBytes = Infinity,
): DeviceRoom[] {
  return devices
    .filter((d) => d.backend === backend)
    .map((device) => {
      let reserved = 0;
      let unseen = 0;
      const workers: string[] = [];
      for (const r of reservations) {
        if (r.backend !== backend) continue;
        const at = r.devices.indexOf(device.index);
        if (at < 0) continue;
        reserved += r.bytes[at];
        if (!r.seenByDriver) unseen += r.bytes[at];
        workers.push(r.workerId);
      }
      const free = Math.max(
        0,
        Math.min(device.vram_free_bytes - unseen, device.vram_total_bytes - reserved, limitBytes - reserved),
      );
      return { device, free, reserved, workers };
    });
}

export interface PlacementRequest {
  backend: Backend;
  /** One device, or "auto" (the default): the device with room and the least load. */
  device?: number | "auto";
  /** Several devices the model is split across (llama.cpp's layer split). */
  devices?: number[];
  /** With "auto": span several devices when no single one has room. */
  allowSplit?: boolean;
}

export interface Placement {
  devices: number[];
  /** Bytes reserved on each device, in the same order. */
  bytes: number[];
}

const gib = (b: number) => (b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : `${Math.round(b / 2 ** 20)} MiB`);
const label = (r: DeviceRoom) => `${r.device.backend}:${r.device.index} (${r.device.name}) ${gib(r.free)} free`;

/** Splits `needed` over devices in proportion to their free memory, as llama.cpp's default split does. */
function spread(rooms: DeviceRoom[], needed: number): Placement {
  const total = rooms.reduce((s, r) => s + r.free, 0);
  return {
    devices: rooms.map((r) => r.device.index),
    bytes: rooms.map((r) => Math.ceil((needed * r.free) / (total || 1))),
  };
}

function exhausted(rooms: DeviceRoom[], needed: number, hint: string): RbeeError {
  return new RbeeError(
    "VRAM_EXHAUSTED",
    `not enough VRAM: the model needs about ${gib(needed)}; ${rooms.map(label).join(", ")}; ${hint}`,
    {
      needed_bytes: needed,
      devices: rooms.map((r) => ({
        device: `${r.device.backend}:${r.device.index}`,
        name: r.device.name,
        free_bytes: r.free,
        total_bytes: r.device.vram_total_bytes,
      })),
    },
  );
}

const SMALLER = "use a smaller quantization (e.g. Q4_K_M), a smaller context_size, fewer slots, or backend cpu";

/** Picks the device(s) for a worker that needs `needed` bytes, or throws BACKEND_UNAVAILABLE / VRAM_EXHAUSTED. */
export function placeWorker(req: PlacementRequest, rooms: DeviceRoom[], needed: number): Placement {
  const byIndex = (i: number) => {
    const r = rooms.find((x) => x.device.index === i);
    if (!r)
      throw new RbeeError(
        "BACKEND_UNAVAILABLE",
        `no ${req.backend} device ${i} on this node; it has ${rooms.map((x) => `${x.device.backend}:${x.device.index}`).join(", ") || "none"}`,
        {
          requested: `${req.backend}:${i}`,
          available: rooms.map((x) => `${x.device.backend}:${x.device.index} ${x.device.name}`),
        },
      );
    return r;
  };
  if (req.devices?.length) {
    const chosen = [...new Set(req.devices)].sort((a, b) => a - b).map(byIndex);
    if (chosen.reduce((s, r) => s + r.free, 0) < needed) throw exhausted(chosen, needed, SMALLER);
    return chosen.length === 1 ? { devices: [chosen[0].device.index], bytes: [needed] } : spread(chosen, needed);
  }
  if (typeof req.device === "number") {
    const r = byIndex(req.device);
    if (r.free < needed) throw exhausted([r], needed, `pick another device (or "auto"), or ${SMALLER}`);
    return { devices: [r.device.index], bytes: [needed] };
  }
  if (!rooms.length)
    throw new RbeeError("BACKEND_UNAVAILABLE", `backend ${req.backend} has no usable device on this node`, {
      requested: req.backend,
    });
  // Least loaded first: fewest workers, then most free memory, so two models land on two GPUs.
  const fits = rooms
    .filter((r) => r.free >= needed)
    .sort((a, b) => a.workers.length - b.workers.length || b.free - a.free);
  if (fits.length) return { devices: [fits[0].device.index], bytes: [needed] };
  if (req.allowSplit && rooms.length > 1) {
    const biggest = [...rooms].sort((a, b) => b.free - a.free);
    const chosen: DeviceRoom[] = [];
    for (const r of biggest) {
      chosen.push(r);
      if (chosen.reduce((s, x) => s + x.free, 0) >= needed)
        return spread(
          chosen.sort((a, b) => a.device.index - b.device.index),
          needed,
        );
    }
    throw exhausted(rooms, needed, `even all devices together are too small; ${SMALLER}`);
  }
  throw exhausted(
    rooms,
    needed,
    rooms.length > 1
      ? `no single device has room: allow the model to span devices (devices [${rooms.map((r) => r.device.index).join(",")}] or allow_split), or ${SMALLER}`
      : SMALLER,
  );
}
