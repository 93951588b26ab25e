// Types for scripts/packages.mjs (imported by test/packages/packed.test.ts).

/** The fields of a package.json these scripts read. */
export interface PackageManifest {
  readonly name: string;
  readonly version: string;
  readonly private?: boolean;
  readonly bin?: string | Record<string, string>;
  readonly dependencies?: Record<string, string>;
  readonly peerDependencies?: Record<string, string>;
  readonly peerDependenciesMeta?: Record<string, { optional?: boolean }>;
  readonly optionalDependencies?: Record<string, string>;
}

/** One package packed by `pnpm pack`. */
export interface PackedPackage {
  readonly name: string;
  readonly version: string;
  /** Its folder in the workspace. */
  readonly dir: string;
  /** Its package.json in the workspace (workspace: ranges not yet replaced). */
  readonly manifest: PackageManifest;
  /** The tarball's path. */
  readonly tarball: string;
  /** The paths in the tarball, relative to the package's root. */
  readonly files: readonly string[];
}

export declare function publishedPackages(): Promise<{ dir: string; manifest: PackageManifest }[]>;
export declare function packPackages(destination: string): Promise<PackedPackage[]>;
export declare function tarballContents(
  pkg: PackedPackage,
  workspace?: ReadonlyMap<string, PackageManifest>,
): Promise<string[]>;
