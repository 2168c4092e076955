import Foundation

/// Masks of several objects painted over a picture, one colour per object: the RGBA bytes the demo app turns
/// into a `CGImage` (and that video export writes), computed here so they are tested on Linux too.
public enum MaskOverlay {
    /// Distinct colours (RGB), repeated for more objects.
    public static let palette: [[UInt8]] = [[30, 144, 255], [255, 99, 71], [50, 205, 50], [255, 215, 0],
                                            [186, 85, 211], [0, 206, 209], [255, 140, 0], [199, 21, 133]]

    /// The palette entry of a tracked object (ids start at 1): the same colour on screen and in an exported video.
    public static func colorIndex(objectId: Int) -> Int { max(objectId - 1, 0) }

    /// `picture` with each mask (width x height bytes, 1 inside) blended in its object's colour at `alpha`; a
    /// pixel inside several masks takes the last object's colour. Returns width x height x 4 bytes, alpha 255.

    public static func rgba(picture: RGBImage, masks: [[UInt8]], colorIndices: [Int]? = nil, alpha: Float = 0.5) -> [UInt8] {
        let plane = picture.width * picture.height
        var out = [UInt8](repeating: 255, count: plane * 4)
        for pixel in 0 ..< plane {
            var color: [UInt8]?
            for (object, mask) in masks.enumerated() where mask[pixel] != 0 {
                color = palette[(colorIndices?[object] ?? object) % palette.count]
            }
            for channel in 0 ..< 3 {
                let base = Float(picture.pixels[pixel * 3 + channel])
                let value = color.map { base * (1 - alpha) + Float($0[channel]) * alpha } ?? base
                out[pixel * 4 + channel] = UInt8(value.rounded())
            }
        }
        return out
    }
}
