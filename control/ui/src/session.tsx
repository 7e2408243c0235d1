import { createContext, useContext } from 'react';
import type { ApiClient } from './api/client';
import type { WhoAmI } from './api/types';
import { allows } from './auth/session';

export interface Session {
  api: ApiClient;
  who: WhoAmI;
  signOut: () => void;
}

export const SessionContext = createContext<Session | null>(null);

export function useSession(): Session {
  const s = useContext(SessionContext);
  if (!s) throw new Error('useSession outside a signed-in session');
  return s;
}

export function useApi(): ApiClient {
  return useSession().api;
}

/** Whether the signed-in token grants `<scope>:<name>`. */
export function useCan(scope: string, name: string): boolean {
  return allows(useSession().who.rights, scope, name);
}
